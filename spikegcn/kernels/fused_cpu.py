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
template <typename idx_t>
static void run(const idx_t* crow, const idx_t* col, const float* val, const float* xe,
                const int64_t* late_ptr, const int16_t* late_f, const int8_t* late_p, const float* late_x,
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
        for (int64_t j = late_ptr[n]; j < late_ptr[n + 1]; ++j) H[late_p[j] * F + late_f[j]] += w * late_x[j];
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

std::vector<torch::Tensor> aggregate_exact(torch::Tensor crow, torch::Tensor col, torch::Tensor val,
                                           torch::Tensor xe, torch::Tensor late_ptr, torch::Tensor late_f,
                                           torch::Tensor late_p, torch::Tensor late_x, torch::Tensor bias,
                                           torch::Tensor inv_scale, torch::Tensor thr, int64_t T_in, int64_t Tw,
                                           bool is_signed) {
  const int64_t N = crow.size(0) - 1, F = xe.size(1), T = thr.size(0);
  auto out_phase = torch::zeros({N, F}, torch::kInt8);
  auto out_sign = is_signed ? torch::zeros({N, F}, torch::kInt8) : torch::Tensor();
  const float* b = bias.numel() ? bias.data_ptr<float>() : nullptr;
  int8_t* s = is_signed ? out_sign.data_ptr<int8_t>() : nullptr;
  if (crow.scalar_type() == torch::kInt32) {
    run<int32_t>(crow.data_ptr<int32_t>(), col.data_ptr<int32_t>(), val.data_ptr<float>(), xe.data_ptr<float>(),
                 late_ptr.data_ptr<int64_t>(), late_f.data_ptr<int16_t>(), late_p.data_ptr<int8_t>(),
                 late_x.data_ptr<float>(), b, inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in,
                 Tw, is_signed, out_phase.data_ptr<int8_t>(), s);
  } else {
    run<int64_t>(crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), val.data_ptr<float>(), xe.data_ptr<float>(),
                 late_ptr.data_ptr<int64_t>(), late_f.data_ptr<int16_t>(), late_p.data_ptr<int8_t>(),
                 late_x.data_ptr<float>(), b, inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in,
                 Tw, is_signed, out_phase.data_ptr<int8_t>(), s);
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
            from torch.utils.cpp_extension import load_inline

            _module = load_inline(
                name="spikegcn_fused_cpu_v2",
                cpp_sources=[_SOURCE],
                functions=["aggregate_exact"],
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
