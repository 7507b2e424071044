r"""Fused CPU kernel for exact-mode graph aggregation with a wait time Tw < T.

The event kernel in :mod:`spikegcn.kernels.scatter` processes one input phase at a time, which on a CPU costs a
scalar scatter per (spike, synapse). This kernel walks :math:`\hat A` row by row instead, like an spmm: for
target node :math:`m` it bins every incoming contribution :math:`\hat A_{mn}\hat x_{nf}` by the fire phase of
:math:`x_{nf}` in a small per-row buffer (``F x (T_in + 1)`` floats, in L1), then runs each neuron's prefix sums
and threshold compares in place. Same spikes as the phase-by-phase path (up to float summation order), at
about the cost of one spmm, whatever Tw is.

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

template <typename idx_t>
static void run(const idx_t* crow, const idx_t* col, const float* val, const float* x, const int8_t* ph,
                const float* bias, const float* inv_scale, const float* thr, int64_t N, int64_t F, int64_t T,
                int64_t T_in, int64_t Tw, bool is_signed, int8_t* out_phase, int8_t* out_sign) {
  const int64_t B = T_in + 1;
  const int64_t first = std::min(Tw + 1, T_in);
  #pragma omp parallel
  {
    std::vector<float> H(F * B);
    #pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < N; ++m) {
      std::fill(H.begin(), H.end(), 0.f);
      for (idx_t e = crow[m]; e < crow[m + 1]; ++e) {
        const int64_t n = col[e];
        const float w = val[e];
        const float* xr = x + n * F;
        const int8_t* pr = ph + n * F;
        for (int64_t f = 0; f < F; ++f) H[f * B + pr[f]] += w * xr[f];  // bin 0 (silent) is never read
      }
      for (int64_t f = 0; f < F; ++f) {
        const float* h = H.data() + f * B;
        float P = bias ? bias[f] : 0.f;
        int64_t k = 0;
        for (; k < first; ++k) P += h[k + 1];
        int8_t fired = 0, sgn = 0;
        for (int64_t t = 1; t <= T; ++t) {
          const int64_t upto = std::min(t + Tw, T_in);
          for (; k < upto; ++k) P += h[k + 1];
          const float a = P * inv_scale[f];
          const float mag = is_signed ? std::fabs(a) : a;
          if (mag >= thr[t - 1]) { fired = (int8_t)t; sgn = a > 0 ? 1 : (a < 0 ? -1 : 0); break; }
        }
        out_phase[m * F + f] = fired;
        if (out_sign) out_sign[m * F + f] = fired ? sgn : 0;
      }
    }
  }
}

std::vector<torch::Tensor> aggregate_exact(torch::Tensor crow, torch::Tensor col, torch::Tensor val,
                                           torch::Tensor x, torch::Tensor ph, torch::Tensor bias,
                                           torch::Tensor inv_scale, torch::Tensor thr, int64_t T_in, int64_t Tw,
                                           bool is_signed) {
  const int64_t N = crow.size(0) - 1, F = x.size(1), T = thr.size(0);
  auto out_phase = torch::zeros({N, F}, torch::kInt8);
  auto out_sign = is_signed ? torch::zeros({N, F}, torch::kInt8) : torch::Tensor();
  const float* b = bias.numel() ? bias.data_ptr<float>() : nullptr;
  int8_t* s = is_signed ? out_sign.data_ptr<int8_t>() : nullptr;
  if (crow.scalar_type() == torch::kInt32) {
    run<int32_t>(crow.data_ptr<int32_t>(), col.data_ptr<int32_t>(), val.data_ptr<float>(), x.data_ptr<float>(),
                 ph.data_ptr<int8_t>(), b, inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in, Tw,
                 is_signed, out_phase.data_ptr<int8_t>(), s);
  } else {
    run<int64_t>(crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), val.data_ptr<float>(), x.data_ptr<float>(),
                 ph.data_ptr<int8_t>(), b, inv_scale.data_ptr<float>(), thr.data_ptr<float>(), N, F, T, T_in, Tw,
                 is_signed, out_phase.data_ptr<int8_t>(), s);
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
                name="spikegcn_fused_cpu_v1",
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
    """Fire phases of the aggregation neurons ``A-hat x`` (see the module docstring); CPU float32 only."""
    mod = load()
    if mod is None:
        raise RuntimeError("fused CPU kernel is not available")
    F = x.shape[1]
    inv = (1.0 / scale.to(torch.float32).expand(F)).contiguous()
    b = bias.to(torch.float32).contiguous() if bias is not None else torch.empty(0)
    ph, sg = mod.aggregate_exact(adj.crow_indices(), adj.col_indices(), adj.values().to(torch.float32).contiguous(),
                                 x.to(torch.float32).contiguous(), phase.to(torch.int8).contiguous(), b, inv,
                                 thresholds.to(torch.float32).contiguous(), int(T_in), int(Tw), bool(signed))
    return ph, (sg if signed else None)
