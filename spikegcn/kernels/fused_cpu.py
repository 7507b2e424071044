r"""Fused CPU kernel for exact-mode graph aggregation with a wait time Tw < T.

The event kernel in :mod:`spikegcn.kernels.scatter` processes one input phase at a time, which on a CPU costs a
scalar scatter per (spike, synapse). This kernel walks :math:`\hat A` row by row instead, like an spmm. The
input spikes fired by phase :math:`T_w + 1` have all arrived before the first output phase, so for target node
:math:`m` they are summed densely (vectorised over features); the few late spikes (small values) are binned by
their fire phase in a per-row buffer (``(T_in + 1) x F`` floats, in L1) from per-source lists. Each neuron then
runs its prefix sums and threshold compares in place. Same spikes as the phase-by-phase path (up to float
summation order), at about the cost of one spmm plus the late spikes x fan-out.

It is compiled on first use with :mod:`torch.utils.cpp_extension` (needs a C++ compiler and ninja) and cached
in ``$TORCH_EXTENSIONS_DIR``. :func:`load` returns ``None`` when it cannot be built; callers then use the
torch-scatter / native event path.
"""
from __future__ import annotations

import os
import threading
import warnings

import torch
from torch import Tensor

_SOURCE = r"""
#include <torch/extension.h>
#include <vector>
#include <cmath>

// Early inputs (fire phase <= k0 = min(Tw + 1, T_in)) arrive before the first output phase: they are summed
// densely, row by row like an spmm (vectorised over features). Late inputs are few (small values) and are
// binned by phase from per-source lists, then added phase by phase during the threshold compares.
struct Late { float x; int16_t f; int16_t p; };  // one 8-byte record per late spike: one cache stream

template <typename idx_t>
static void run_packed(const idx_t* crow, const idx_t* col, const float* val, const float* xe,
                const int64_t* late_ptr, const Late* late,
                const float* bias, const float* inv_scale, const float* thr, int64_t N, int64_t F, int64_t T,
                int64_t T_in, int64_t Tw, bool is_signed, int8_t* out_phase, int8_t* out_sign) {
  const int64_t k0 = std::min(Tw + 1, T_in);
  #pragma omp parallel
  {
    std::vector<float> acc(F), H((T_in + 1) * F);
    #pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < N; ++m) {
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(H.begin(), H.end(), 0.f);
      float* a = acc.data();
      for (idx_t e = crow[m]; e < crow[m + 1]; ++e) {
        const int64_t n = col[e];
        const float w = val[e];
        const float* xr = xe + n * F;
        #pragma omp simd
        for (int64_t f = 0; f < F; ++f) a[f] += w * xr[f];
        for (int64_t j = late_ptr[n]; j < late_ptr[n + 1]; ++j) H[late[j].p * F + late[j].f] += w * late[j].x;
      }
      for (int64_t f = 0; f < F; ++f) {
        float P = (bias ? bias[f] : 0.f) + acc[f];
        int64_t k = k0;
        int8_t fired = 0, sgn = 0;
        for (int64_t t = 1; t <= T; ++t) {
          const int64_t upto = std::min(t + Tw, T_in);
          for (; k < upto; ++k) P += H[(k + 1) * F + f];
          const float v = P * inv_scale[f];
          const float mag = is_signed ? std::fabs(v) : v;
          if (mag >= thr[t - 1]) { fired = (int8_t)t; sgn = v > 0 ? 1 : (v < 0 ? -1 : 0); break; }
        }
        out_phase[m * F + f] = fired;
        if (out_sign) out_sign[m * F + f] = fired ? sgn : 0;
      }
    }
  }
}

// Single-spike encoding: fire phase = T + 1 - #(thresholds <= a), 0 when none is reached (the same comparisons
// as the torch.searchsorted path in spikegcn.coding.encode). Blocks of 256 elements, the threshold loop outside
// so that the compares vectorise; also counts non-finite inputs so the caller needs no extra pass.
std::vector<torch::Tensor> encode_phase(torch::Tensor x, torch::Tensor thr_asc, bool is_signed) {
  const int64_t n = x.numel(), T = thr_asc.numel();
  auto phase = torch::empty_like(x, torch::kInt8);
  auto sign = is_signed ? torch::empty_like(x, torch::kInt8) : torch::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* th = thr_asc.data_ptr<float>();
  int8_t* pp = phase.data_ptr<int8_t>();
  int8_t* sp = is_signed ? sign.data_ptr<int8_t>() : nullptr;
  const int64_t BS = 256, nb = (n + BS - 1) / BS;
  int64_t bad = 0;
  #pragma omp parallel for schedule(static) reduction(+:bad)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * BS, len = std::min(BS, n - i0);
    float a[256];
    int8_t cnt[256];
    for (int64_t i = 0; i < len; ++i) {
      const float v = xp[i0 + i];
      bad += !std::isfinite(v);
      a[i] = is_signed ? std::fabs(v) : v;
      cnt[i] = 0;
    }
    for (int64_t t = 0; t < T; ++t) {
      const float h = th[t];
      #pragma omp simd
      for (int64_t i = 0; i < len; ++i) cnt[i] += (int8_t)(a[i] >= h);
    }
    for (int64_t i = 0; i < len; ++i) pp[i0 + i] = cnt[i] ? (int8_t)(T + 1 - cnt[i]) : 0;
    if (sp) {
      #pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float v = xp[i0 + i];
        sp[i0 + i] = (int8_t)(((v > 0) - (v < 0)) * (cnt[i] != 0));
      }
    }
  }
  return {phase, sign, torch::tensor(bad)};
}

// Decoding: value = sign * scale[channel] * table[phase], channels in the last dimension (scale may be 1 entry).
torch::Tensor decode_phase(torch::Tensor phase, torch::Tensor sign, torch::Tensor table, torch::Tensor scale) {
  const int64_t n = phase.numel(), C = scale.numel(), last = phase.dim() ? phase.size(-1) : 1;
  auto out = torch::empty(phase.sizes(), torch::kFloat32);
  const int8_t* pp = phase.data_ptr<int8_t>();
  const int8_t* sp = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  const float* tb = table.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t rows = n / last;
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* p = pp + r * last;
    float* o = op + r * last;
    for (int64_t j = 0; j < last; ++j) o[j] = tb[p[j]] * (C == 1 ? sc[0] : sc[j]);
    if (sp) {
      const int8_t* s = sp + r * last;
      for (int64_t j = 0; j < last; ++j) o[j] *= (float)s[j];
    }
  }
  return out;
}

std::vector<torch::Tensor> aggregate_exact(torch::Tensor crow, torch::Tensor col, torch::Tensor val,
                                           torch::Tensor xe, torch::Tensor late_ptr, torch::Tensor late_f,
                                           torch::Tensor late_p, torch::Tensor late_x, torch::Tensor bias,
                                           torch::Tensor inv_scale, torch::Tensor thr, int64_t T_in, int64_t Tw,
                                           bool is_signed) {
  const int64_t N = crow.size(0) - 1, F = xe.size(1), T = thr.size(0), L = late_x.numel();
  auto out_phase = torch::zeros({N, F}, torch::kInt8);
  auto out_sign = is_signed ? torch::zeros({N, F}, torch::kInt8) : torch::Tensor();
  const float* b = bias.numel() ? bias.data_ptr<float>() : nullptr;
  int8_t* s = is_signed ? out_sign.data_ptr<int8_t>() : nullptr;
  std::vector<Late> late(L);
  const float* lx = late_x.data_ptr<float>();
  const int16_t* lf = late_f.data_ptr<int16_t>();
  const int8_t* lp = late_p.data_ptr<int8_t>();
  for (int64_t j = 0; j < L; ++j) late[j] = Late{lx[j], lf[j], (int16_t)lp[j]};
  if (crow.scalar_type() == torch::kInt32) {
    run_packed<int32_t>(crow.data_ptr<int32_t>(), col.data_ptr<int32_t>(), val.data_ptr<float>(),
                        xe.data_ptr<float>(), late_ptr.data_ptr<int64_t>(), late.data(), b,
                        inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in, Tw, is_signed,
                        out_phase.data_ptr<int8_t>(), s);
  } else {
    run_packed<int64_t>(crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), val.data_ptr<float>(),
                        xe.data_ptr<float>(), late_ptr.data_ptr<int64_t>(), late.data(), b,
                        inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in, Tw, is_signed,
                        out_phase.data_ptr<int8_t>(), s);
  }
  return {out_phase, out_sign};
}
"""

_lock = threading.Lock()
_module = None
_tried = False


def load():
    """The compiled module, or ``None`` if it cannot be built here (set ``SPIKEGCN_NO_FUSED=1`` to skip)."""
    global _module, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        _tried = True
        if os.environ.get("SPIKEGCN_NO_FUSED"):
            return None
        try:
            import sys

            from torch.utils.cpp_extension import load_inline

            print("spikegcn: loading the compiled CPU kernels (built once per environment, about a minute)",
                  file=sys.stderr, flush=True)

            _module = load_inline(
                name="spikegcn_fused_cpu_v7",
                cpp_sources=[_SOURCE],
                functions=["aggregate_exact", "encode_phase", "decode_phase"],
                extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # no compiler / ninja: fall back to the event kernel
            warnings.warn(f"spikegcn: fused CPU kernel unavailable ({type(exc).__name__}: {exc}); "
                          f"using the torch-scatter event path", RuntimeWarning)
            _module = None
    return _module


def aggregate_exact(adj: Tensor, x: Tensor, phase: Tensor, bias: Tensor | None, scale: Tensor, thresholds: Tensor,
                    T_in: int, Tw: int, signed: bool) -> tuple[Tensor, Tensor | None]:
    """Fire phases of the aggregation neurons ``A-hat x`` (see the module docstring); CPU float32 only.

    ``x`` are the values the input spikes carry (ANN units) and ``phase`` their fire phases.
    """
    mod = load()
    if mod is None:
        raise RuntimeError("fused CPU kernel is not available")
    N, F = x.shape
    if F > 32767:
        raise ValueError(f"fused kernel supports at most 32767 features, got {F}")
    k0 = min(Tw + 1, T_in)
    x = x.to(torch.float32)
    late = phase > k0
    xe = torch.where(late, torch.zeros((), dtype=x.dtype), x).contiguous()
    rows, feats = late.nonzero(as_tuple=True)  # row-major: already grouped by source node
    late_ptr = torch.zeros(N + 1, dtype=torch.int64)
    late_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=N), 0)
    inv = (1.0 / scale.to(torch.float32).expand(F)).contiguous()
    b = bias.to(torch.float32).contiguous() if bias is not None else torch.empty(0)
    ph, sg = mod.aggregate_exact(adj.crow_indices(), adj.col_indices(), adj.values().to(torch.float32).contiguous(),
                                 xe, late_ptr, feats.to(torch.int16), phase[rows, feats].to(torch.int8),
                                 x[rows, feats].contiguous(), b, inv, thresholds.to(torch.float32).contiguous(),
                                 int(T_in), int(Tw), bool(signed))
    return ph, (sg if signed else None)


def encode_phase(x: Tensor, thresholds_asc: Tensor, signed: bool) -> tuple[Tensor, Tensor | None, int] | None:
    """One-pass CPU encoder for float32 tensors with T <= 127: ``(phase, sign, non-finite count)``, or ``None``
    when the kernel is unavailable."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or thresholds_asc.numel() > 127:
        return None
    mod = _module if _tried else load()
    if mod is None:
        return None
    ph, sg, bad = mod.encode_phase(x.contiguous(), thresholds_asc.contiguous(), bool(signed))
    return ph, (sg if signed else None), int(bad)


def decode_phase(phase: Tensor, table: Tensor, sign: Tensor | None, scale: Tensor) -> Tensor | None:
    """One-pass CPU decoder to float32 (``sign * scale[channel] * table[phase]``); ``None`` if unavailable."""
    if phase.device.type != "cpu" or phase.dtype != torch.int8 or table.dtype != torch.float32:
        return None
    last = phase.shape[-1] if phase.dim() else 1
    if scale.numel() not in (1, last):
        return None
    mod = _module if _tried else load()
    if mod is None:
        return None
    s = sign.contiguous() if sign is not None else torch.empty(0, dtype=torch.int8)
    return mod.decode_phase(phase.contiguous(), s, table.contiguous(), scale.to(torch.float32).reshape(-1).contiguous())
