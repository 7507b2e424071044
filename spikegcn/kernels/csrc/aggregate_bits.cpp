// The late-phase bins of A x for binary multi-spike input (the input encoder's packed codes): fused_cpu's
// aggregate_bins for int8 one-spike codes, for the first layer of a composite graph operator (SAGE, GraphConv) in
// exact mode with a wait (see spikegcn/late_bins.py).
//
// Phase p of a binary input carries the difference of two prefix values, value(top p bits) - value(top p - 1
// bits), each decoded as decode_binary does: (m x 2^-T) x sign x lambda, with m the truncated code. The event path
// forms that difference for every node and multiplies A by it, phase by phase; here a row's edges stream by once
// and every late phase's difference is formed in registers, 16 features at a time, and added into its bin as
// torch.sparse.mm adds (w x d, then +, in edge order), so the bins are the event path's bit for bit. Exact in
// float32 while the codes stay below 2^24 (T <= 24): m x 2^-T x (+-lambda) is then one rounding, like the torch
// decode's (m x 2^-T exact, x sign exact, x lambda rounded). Part of the module built from fused_cpu.cpp.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "huge_pages.h"  // empty_huge: the bins on transparent huge pages

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPIKEGCN_BITS_X86 1
#endif

namespace {

#ifdef SPIKEGCN_BITS_X86
// Rows m0 .. m1 - 1: out[m, q, f] = sum over the row's edges e of val[e] x d_q(col[e], f), d_q the value the
// input sends at phase k0 + 1 + q; NL late phases held in registers.
template <int NL, typename idx_t>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void bits_rows(
    const idx_t* crow, const idx_t* col, const float* val, const int32_t* bits, const int8_t* sign, const float* lam,
    int64_t F, int T, int k0, int64_t m0, int64_t m1, float* out) {
  const float pw = std::ldexp(1.f, -T);
  __m512i keep[NL + 1];  // the bits of phases 1 .. k0 + q: the top k0 + q of T
  for (int q = 0; q <= NL; ++q) keep[q] = _mm512_set1_epi32((int32_t)(~((uint32_t(1) << (T - k0 - q)) - 1)));
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t f0 = 0; f0 < F; f0 += 16) {
      const __mmask16 tail = (F - f0 >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (F - f0)) - 1);
      const __m512 lp = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, lam + f0), _mm512_set1_ps(pw));  // exact
      __m512 h[NL];
      for (int q = 0; q < NL; ++q) h[q] = _mm512_setzero_ps();
      for (idx_t e = crow[m]; e < crow[m + 1]; ++e) {
        const int64_t n = col[e];
        const __m512i b = _mm512_maskz_loadu_epi32(tail, bits + n * F + f0);
        __m512 c = lp;  // +-lambda 2^-T: the sign's product is exact
        if (sign)
          c = _mm512_mul_ps(c, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(tail, sign + n * F + f0))));
        const __m512 w = _mm512_set1_ps(val[e]);
        __m512 prev = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, keep[0])), c);
        for (int q = 0; q < NL; ++q) {
          const __m512 cur = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, keep[q + 1])), c);
          h[q] = _mm512_add_ps(h[q], _mm512_mul_ps(w, _mm512_sub_ps(cur, prev)));
          prev = cur;
        }
      }
      for (int q = 0; q < NL; ++q) _mm512_mask_storeu_ps(out + (m * NL + q) * F + f0, tail, h[q]);
    }
  }
}

template <typename idx_t>
using BitsFn = void (*)(const idx_t*, const idx_t*, const float*, const int32_t*, const int8_t*, const float*,
                        int64_t, int, int, int64_t, int64_t, float*);

template <typename idx_t>
BitsFn<idx_t> pick_bits(int nl) {
  switch (nl) {
#define SPIKEGCN_NL(n) case n: return bits_rows<n, idx_t>;
    SPIKEGCN_NL(1) SPIKEGCN_NL(2) SPIKEGCN_NL(3) SPIKEGCN_NL(4) SPIKEGCN_NL(5) SPIKEGCN_NL(6) SPIKEGCN_NL(7)
    SPIKEGCN_NL(8) SPIKEGCN_NL(9) SPIKEGCN_NL(10) SPIKEGCN_NL(11) SPIKEGCN_NL(12)
#undef SPIKEGCN_NL
    default: return nullptr;
  }
}

// Blocks of 64 rows over the threads (past 2^15 outputs per bin: below, waking the team costs more).
template <typename idx_t>
void run_bits(BitsFn<idx_t> fn, const idx_t* crow, const idx_t* col, const float* val, const int32_t* bits,
              const int8_t* sign, const float* lam, int64_t N, int64_t F, int T, int k0, float* out) {
#pragma omp parallel for schedule(dynamic, 1) if (N * F >= (1 << 15))
  for (int64_t b = 0; b < (N + 63) / 64; ++b)
    fn(crow, col, val, bits, sign, lam, F, T, k0, b * 64, std::min(N, b * 64 + 64), out);
}
#endif

}  // namespace

bool aggregate_bits_supported(int64_t T, int64_t k0) {
#ifdef SPIKEGCN_BITS_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && T <= 24 && k0 >= 0 &&
         T - k0 >= 1 && T - k0 <= 12;
#else
  return false;
#endif
}

// crow, col, val: CSR [rows, N_in]; bits: int32 [N_in, F] codes of T phases (phase t is bit T - t); sign: int8
// [N_in, F] or empty; scale: float32 [F] (lambda); returns float32 [rows, T - k0, F], bin q the sum over each row's
// edges of the values fired at phase k0 + 1 + q. Needs aggregate_bits_supported(T, k0).
torch::Tensor aggregate_bins_bits(torch::Tensor crow, torch::Tensor col, torch::Tensor val, torch::Tensor bits,
                                  torch::Tensor sign, torch::Tensor scale, int64_t T, int64_t k0) {
  TORCH_CHECK(aggregate_bits_supported(T, k0), "aggregate_bins_bits: needs AVX-512, T <= 24 and 1 .. 12 late phases");
  TORCH_CHECK(bits.dim() == 2 && bits.is_contiguous() && bits.scalar_type() == torch::kInt32,
              "aggregate_bins_bits: bits must be a contiguous int32 [N_in, F]");
  const int64_t N = crow.size(0) - 1, F = bits.size(1), nl = T - k0;
  TORCH_CHECK(sign.numel() == 0 || (sign.sizes() == bits.sizes() && sign.is_contiguous() &&
                                    sign.scalar_type() == torch::kInt8),
              "aggregate_bins_bits: sign must be empty or an int8 tensor shaped like the bits");
  TORCH_CHECK(scale.numel() == F && scale.is_contiguous() && scale.scalar_type() == torch::kFloat32,
              "aggregate_bins_bits: one float32 scale per feature");
  TORCH_CHECK(val.scalar_type() == torch::kFloat32 && val.is_contiguous() && col.scalar_type() == crow.scalar_type(),
              "aggregate_bins_bits: float32 values and one index type");
  auto out = empty_huge({N, nl, F}, torch::kFloat32);
#ifdef SPIKEGCN_BITS_X86
  const int8_t* sg = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  AT_DISPATCH_INDEX_TYPES(crow.scalar_type(), "aggregate_bins_bits", [&] {
    run_bits<index_t>(pick_bits<index_t>((int)nl), crow.data_ptr<index_t>(), col.data_ptr<index_t>(),
                      val.data_ptr<float>(), bits.data_ptr<int32_t>(), sg, scale.data_ptr<float>(), N, F, (int)T,
                      (int)k0, out.data_ptr<float>());
  });
#endif
  return out;
}

void register_aggregate_bits(pybind11::module_& m) {
  m.def("aggregate_bins_bits", &aggregate_bins_bits, "late-phase bins of A x for binary multi-spike input");
  m.def("aggregate_bits_supported", &aggregate_bits_supported, "whether aggregate_bins_bits serves (T, k0) here");
}
