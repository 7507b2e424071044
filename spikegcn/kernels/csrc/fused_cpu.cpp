// Fused CPU kernels of spikegcn: exact-mode graph aggregation (Tw < T) and the CPU feature check; the encoder and
// decoder are in codec_cpu.cpp, the exact-mode CNN layers in conv_exact.cpp (their late-spike lists in
// late_lists.cpp).
// Built explicitly (`spikegcn build-kernels`, or `make install`) by spikegcn/kernels/fused_cpu.py into a cache
// folder keyed by torch, Python, compiler, flags, machine and this file's hash; see that module's docstring.
#include <torch/extension.h>
#include <vector>
#include <cstring>
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string>
#include <cmath>

#include "huge_pages.h"  // empty_huge: the bins on transparent huge pages

// Early inputs (fire phase <= k0 = min(Tw + 1, T_in)) arrive before the first output phase: they are summed
// densely, row by row like an spmm (vectorised over features). Late inputs are few (small values) and are
// binned by phase from per-source lists, then added phase by phase during the threshold compares.
struct Late { float x; int16_t f; int16_t p; };  // one 8-byte record per late spike: one cache stream

// Fire phases of row m from its early sums acc[f] and its late-phase bins: the bin of input phase k is
// H[(k + off) * stride + f]. The same sequence of additions in every kernel, hence the same spikes.
static inline void fire_row(int64_t m, int64_t F, const float* acc, const float* H, int64_t off, int64_t stride,
                            int64_t k0, int64_t T, int64_t T_in, int64_t Tw, bool is_signed, const float* bias,
                            const float* inv_scale, const float* thr, int8_t* out_phase, int8_t* out_sign) {
  for (int64_t f = 0; f < F; ++f) {
    float P = (bias ? bias[f] : 0.f) + acc[f];
    int64_t k = k0;
    int8_t fired = 0, sgn = 0;
    for (int64_t t = 1; t <= T; ++t) {
      const int64_t upto = std::min(t + Tw, T_in);
      for (; k < upto; ++k) P += H[(k + off) * stride + f];
      const float v = P * inv_scale[f];
      const float mag = is_signed ? std::fabs(v) : v;
      if (mag >= thr[t - 1]) { fired = (int8_t)t; sgn = v > 0 ? 1 : (v < 0 ? -1 : 0); break; }
    }
    out_phase[m * F + f] = fired;
    if (out_sign) out_sign[m * F + f] = fired ? sgn : 0;
  }
}

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
      fire_row(m, F, acc.data(), H.data(), 1, F, k0, T, T_in, Tw, is_signed, bias, inv_scale, thr, out_phase,
               out_sign);
    }
  }
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
// AVX-512 variant: reads the input as int8 codes (sign x fire phase, 1 byte per neuron instead of a 4-byte float),
// which quarters the memory traffic of the row-by-row pass that bounds this kernel, and handles late spikes
// vectorised: 16 features at a time, one masked add per late phase into a per-row [late phases x F] buffer
// instead of one scalar scatter per (late spike, synapse). Values are decoded in registers exactly as
// decode_phase does (table[phase] * scale[f], then the sign), and added as w * v then + (no FMA), so the
// sums are bit-identical to run_packed's.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPIKEGCN_X86 1
#endif

#ifdef SPIKEGCN_X86
#include "fire_registers.h"  // FireArgs, check16 / fire16 (AVX-512), check8 / fire8 (AVX2)

// One row m, one block of 16 features: the early sum and the late-phase bins stream the row's edges
// (branch-free: a compare and a masked add per late phase). NL >= 0: the NL bins live in registers; NL < 0: nl
// bins in memory (more than 16 late phases: rare, long codes with a short wait).
template <int NL, typename idx_t>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline))
static inline void row_block(idx_t e0, idx_t e1, const idx_t* col, const float* val, const int8_t* codes, int64_t F,
                             int64_t f0, __mmask16 tail, __m512 lut_lo, __m512 lut_hi, __m512 sc, int k0, int nl,
                             float* acc, float* H, int64_t Fp, int64_t m, const FireArgs* fire) {
  __m512 ac = _mm512_setzero_ps();
  __m512 h[NL > 0 ? NL : 1];
  for (int q = 0; q < NL; ++q) h[q] = _mm512_setzero_ps();
  if constexpr (NL < 0)
    for (int q = 0; q < nl; ++q) _mm512_store_ps(H + q * Fp + f0, _mm512_setzero_ps());
  const __m512i vk0 = _mm512_set1_epi32(k0);
  for (idx_t e = e0; e < e1; ++e) {
    const __m512i ci = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(tail, codes + (int64_t)col[e] * F + f0));
    const __m512i a = _mm512_abs_epi32(ci);
    __m512 v = _mm512_mul_ps(_mm512_permutex2var_ps(lut_lo, a, lut_hi), sc);
    v = _mm512_mask_sub_ps(v, _mm512_movepi32_mask(ci), _mm512_setzero_ps(), v);
    const __m512 wv = _mm512_mul_ps(_mm512_set1_ps(val[e]), v);
    ac = _mm512_mask_add_ps(ac, _mm512_cmple_epi32_mask(a, vk0), ac, wv);
    for (int q = 0; q < (NL >= 0 ? NL : nl); ++q) {
      const __mmask16 m = _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(k0 + 1 + q));
      if constexpr (NL >= 0) {
        h[q] = _mm512_mask_add_ps(h[q], m, h[q], wv);
      } else {
        float* hp = H + q * Fp + f0;
        const __m512 hv = _mm512_load_ps(hp);
        _mm512_store_ps(hp, _mm512_mask_add_ps(hv, m, hv, wv));
      }
    }
  }
  if (fire) return fire16<NL>(ac, h, H, Fp, nl, m, F, f0, tail, *fire);
  _mm512_store_ps(acc + f0, ac);
  for (int q = 0; q < NL; ++q) _mm512_store_ps(H + q * Fp + f0, h[q]);
}

// One (row, 16-feature block) of the AVX-512 kernel: picks the register-held variant for the number of late phases.
template <typename idx_t>
struct Block512 {
  const idx_t* col; const float* val; const int8_t* codes; int64_t F; int k0, nl; const float* tb; const float* sc;
  static constexpr int W = 16;
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
  void operator()(idx_t e0, idx_t e1, int64_t f0, float* acc, float* H, int64_t Fp, int64_t m,
                  const FireArgs* fire) const {
    const __mmask16 tail = (F - f0 >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (F - f0)) - 1);
    const __m512 lut_lo = _mm512_load_ps(tb), lut_hi = _mm512_load_ps(tb + 16), s = _mm512_load_ps(sc + f0);
    switch (nl) {
#define SPIKEGCN_NL(n) case n: row_block<n>(e0, e1, col, val, codes, F, f0, tail, lut_lo, lut_hi, s, k0, nl, acc, H, Fp, m, fire); break;
      SPIKEGCN_NL(0) SPIKEGCN_NL(1) SPIKEGCN_NL(2) SPIKEGCN_NL(3) SPIKEGCN_NL(4) SPIKEGCN_NL(5)
      SPIKEGCN_NL(6) SPIKEGCN_NL(7) SPIKEGCN_NL(8) SPIKEGCN_NL(9) SPIKEGCN_NL(10) SPIKEGCN_NL(11)
      SPIKEGCN_NL(12) SPIKEGCN_NL(13) SPIKEGCN_NL(14) SPIKEGCN_NL(15) SPIKEGCN_NL(16)
#undef SPIKEGCN_NL
      default: row_block<-1>(e0, e1, col, val, codes, F, f0, tail, lut_lo, lut_hi, s, k0, nl, acc, H, Fp, m, fire);
    }
  }
};

// AVX2 variant (CPUs without AVX-512): the same scheme on 8 features at a time. No mask registers: a lane is
// kept out of a sum by adding +0 (and-ing w*v with the compare result), which leaves every non-zero sum
// unchanged; the 32-entry table is four 8-entry permutes blended on bits 3 and 4 of the phase.
struct Lut8 { __m256 t0, t1, t2, t3; };

__attribute__((target("avx2"), always_inline))
static inline __m256i load_codes8(const int8_t* p, int64_t n) {
  if (n >= 8) return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p));
  int8_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)tmp));
}

__attribute__((target("avx2"), always_inline))
static inline __m256 weighted8(const __m256i ci, const Lut8& L, const __m256 sc, float w, __m256i* abs_out) {
  const __m256i a = _mm256_abs_epi32(ci);
  const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(a, 28)), b4 = _mm256_castsi256_ps(_mm256_slli_epi32(a, 27));
  const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(L.t0, a), _mm256_permutevar8x32_ps(L.t1, a), b3);
  const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(L.t2, a), _mm256_permutevar8x32_ps(L.t3, a), b3);
  __m256 v = _mm256_mul_ps(_mm256_blendv_ps(lo, hi, b4), sc);
  v = _mm256_blendv_ps(v, _mm256_sub_ps(_mm256_setzero_ps(), v), _mm256_castsi256_ps(ci));  // negative codes
  *abs_out = a;
  return _mm256_mul_ps(_mm256_set1_ps(w), v);
}

// NL >= 0: the NL late-phase bins in registers; NL < 0: nl bins in memory (long codes with a short wait).
template <int NL, typename idx_t>
__attribute__((target("avx2"), always_inline))
static inline void row_block8(idx_t e0, idx_t e1, const idx_t* col, const float* val, const int8_t* codes,
                              int64_t F, int64_t f0, const Lut8& L, __m256 sc, int k0, int nl, float* acc, float* H,
                              int64_t Fp, int64_t m, const FireArgs* fire) {
  __m256 ac = _mm256_setzero_ps();
  __m256 h[NL > 0 ? NL : 1];
  for (int q = 0; q < NL; ++q) h[q] = _mm256_setzero_ps();
  if constexpr (NL < 0)
    for (int q = 0; q < nl; ++q) _mm256_store_ps(H + q * Fp + f0, _mm256_setzero_ps());
  const __m256i early = _mm256_set1_epi32(k0 + 1);
  const int64_t n = F - f0;
  for (idx_t e = e0; e < e1; ++e) {
    __m256i a;
    const __m256 wv = weighted8(load_codes8(codes + (int64_t)col[e] * F + f0, n), L, sc, val[e], &a);
    ac = _mm256_add_ps(ac, _mm256_and_ps(wv, _mm256_castsi256_ps(_mm256_cmpgt_epi32(early, a))));
    for (int q = 0; q < (NL >= 0 ? NL : nl); ++q) {
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32(k0 + 1 + q)));
      if constexpr (NL >= 0) {
        h[q] = _mm256_add_ps(h[q], _mm256_and_ps(wv, m));
      } else {
        float* hp = H + q * Fp + f0;
        _mm256_store_ps(hp, _mm256_add_ps(_mm256_load_ps(hp), _mm256_and_ps(wv, m)));
      }
    }
  }
  if (fire) return fire8<NL>(ac, h, H, Fp, nl, m, F, f0, *fire);
  _mm256_store_ps(acc + f0, ac);
  for (int q = 0; q < NL; ++q) _mm256_store_ps(H + q * Fp + f0, h[q]);
}

// One (row, 8-feature block) of the AVX2 kernel.
template <typename idx_t>
struct Block256 {
  const idx_t* col; const float* val; const int8_t* codes; int64_t F; int k0, nl; const float* tb; const float* sc;
  static constexpr int W = 8;
  __attribute__((target("avx2")))
  void operator()(idx_t e0, idx_t e1, int64_t f0, float* acc, float* H, int64_t Fp, int64_t m,
                  const FireArgs* fire) const {
    const Lut8 L{_mm256_load_ps(tb), _mm256_load_ps(tb + 8), _mm256_load_ps(tb + 16), _mm256_load_ps(tb + 24)};
    const __m256 s = _mm256_load_ps(sc + f0);
    switch (nl) {
#define SPIKEGCN_NL(n) case n: row_block8<n>(e0, e1, col, val, codes, F, f0, L, s, k0, nl, acc, H, Fp, m, fire); break;
      SPIKEGCN_NL(0) SPIKEGCN_NL(1) SPIKEGCN_NL(2) SPIKEGCN_NL(3) SPIKEGCN_NL(4) SPIKEGCN_NL(5)
      SPIKEGCN_NL(6) SPIKEGCN_NL(7) SPIKEGCN_NL(8) SPIKEGCN_NL(9) SPIKEGCN_NL(10) SPIKEGCN_NL(11)
      SPIKEGCN_NL(12)
#undef SPIKEGCN_NL
      default: row_block8<-1>(e0, e1, col, val, codes, F, f0, L, s, k0, nl, acc, H, Fp, m, fire);
    }
  }
};

static inline float* align64(std::vector<float>& v) {
  return (float*)(((uintptr_t)v.data() + 63) & ~(uintptr_t)63);
}

// Row loop of the vectorised kernels: block(...) sums the early inputs and late-phase bins of one row's
// features f0 .. f0 + W - 1 and fires those neurons (fire16 / fire8), without leaving registers.
template <typename Block, typename idx_t>
static void run_codes(const Block& block, const idx_t* crow, int64_t N, const FireArgs& fire) {
  const int64_t nc = (block.F + Block::W - 1) / Block::W, Fp = nc * Block::W;
  #pragma omp parallel
  {
    std::vector<float> accv(Fp + 16), Hv(std::max(block.nl, 1) * Fp + 16);
    float* acc = align64(accv);
    float* H = align64(Hv);  // the bins of the memory variant (more late phases than registers)
    #pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < N; ++m)
      for (int64_t c = 0; c < nc; ++c) block(crow[m], crow[m + 1], c * Block::W, acc, H, Fp, m, &fire);
  }
}
#endif

#ifdef SPIKEGCN_X86
// The same row blocks, without neurons: each row's late-phase bins (phases k0+1 .. k0+nl) written to out[N, nl, F]
// (ANN units), for operators that map the aggregated values further before their neurons (SAGE's W after the mean).
template <typename Block, typename idx_t>
static void run_bins(const Block& block, const idx_t* crow, int64_t N, int64_t F, int64_t nl, float* out) {
  const int64_t nc = (F + Block::W - 1) / Block::W, Fp = nc * Block::W;
  #pragma omp parallel
  {
    std::vector<float> accv(Fp + 16), Hv((nl > 0 ? nl : 1) * Fp + 16);
    float* acc = align64(accv);
    float* H = align64(Hv);
    #pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < N; ++m) {
      for (int64_t c = 0; c < nc; ++c) block(crow[m], crow[m + 1], c * Block::W, acc, H, Fp, m, nullptr);
      for (int64_t q = 0; q < nl; ++q) std::memcpy(out + (m * nl + q) * F, H + q * Fp, F * sizeof(float));
    }
  }
}
#endif

// 2: AVX-512 (F, BW, VL, DQ), 1: AVX2, 0: neither (or not x86).
// SPIKEGCN_CPU_ISA=portable|avx2|avx512 caps it, as in fused_cpu.max_isa (which also refuses other values); the
// encoder and decoder pick their variant once per process, at their first call.
int64_t cpu_isa() {
  int64_t isa = 0;
#ifdef SPIKEGCN_X86
  __builtin_cpu_init();
  // popcnt: the encoders count compare masks with it (every AVX2 CPU has it, a VM may hide it)
  const bool popcnt = __builtin_cpu_supports("popcnt");
  if (popcnt && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    isa = 2;
  else
    isa = popcnt && __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
  const char* cap = std::getenv("SPIKEGCN_CPU_ISA");
  if (cap) {
    const std::string c(cap);
    if (c == "portable") isa = 0;
    else if (c == "avx2") isa = std::min<int64_t>(isa, 1);
  }
  return isa;
}

// The checks both int8-code entry points make on their inputs (``what``: the entry point's name).
static void check_codes(const char* what, int64_t isa, int64_t T_in, const torch::Tensor& codes,
                        const torch::Tensor& table) {
  TORCH_CHECK(isa == 1 || isa == 2, what, ": isa must be 1 (AVX2) or 2 (AVX-512)");
  TORCH_CHECK(isa <= cpu_isa(), what, ": this CPU lacks the requested instruction set");
  TORCH_CHECK(T_in >= 1 && T_in <= 31, what, " supports input codes with 1 <= T <= 31");
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kInt8 && codes.is_contiguous(),
              what, ": codes must be a contiguous 2-D int8 tensor");
  TORCH_CHECK(table.numel() == T_in + 1, what, ": the value table needs T_in + 1 entries");
}

#ifdef SPIKEGCN_X86
// The value table (32 entries) and the per-feature input scale (zero-padded to whole blocks), 64-byte aligned.
struct CodeTables {
  alignas(64) float tb[32] = {0};
  std::vector<float> scv;
  float* sc;
  CodeTables(const torch::Tensor& table, const torch::Tensor& scale, int64_t T_in, int64_t F) : scv(F + 32, 0.f) {
    for (int64_t i = 0; i <= T_in; ++i) tb[i] = table.data_ptr<float>()[i];
    sc = align64(scv);
    for (int64_t f = 0; f < F; ++f) sc[f] = scale.data_ptr<float>()[f];
  }
};

template <template <typename> class Block, typename idx_t, typename Fn>
static void with_block(const torch::Tensor& crow, const torch::Tensor& col, const torch::Tensor& val,
                       const torch::Tensor& codes, int64_t F, int k0, int nl, const CodeTables& t, Fn&& fn) {
  fn(Block<idx_t>{col.data_ptr<idx_t>(), val.data_ptr<float>(), codes.data_ptr<int8_t>(), F, k0, nl, t.tb, t.sc},
     crow.data_ptr<idx_t>());
}

// fn(row block, crow) with the row block of the instruction set (2: AVX-512, 1: AVX2) and the CSR index type.
template <typename Fn>
static void dispatch_blocks(int64_t isa, const torch::Tensor& crow, const torch::Tensor& col, const torch::Tensor& val,
                            const torch::Tensor& codes, int64_t F, int k0, int nl, const CodeTables& t, Fn&& fn) {
  const bool i32 = crow.scalar_type() == torch::kInt32;
  if (isa == 2) {
    if (i32) with_block<Block512, int32_t>(crow, col, val, codes, F, k0, nl, t, fn);
    else with_block<Block512, int64_t>(crow, col, val, codes, F, k0, nl, t, fn);
  } else {
    if (i32) with_block<Block256, int32_t>(crow, col, val, codes, F, k0, nl, t, fn);
    else with_block<Block256, int64_t>(crow, col, val, codes, F, k0, nl, t, fn);
  }
}
#endif

// codes: int8 [N, F], sign x fire phase of each input neuron; scale: [F] input lambda; table: [T_in + 1].
std::vector<torch::Tensor> aggregate_codes(torch::Tensor crow, torch::Tensor col, torch::Tensor val,
                                           torch::Tensor codes, torch::Tensor scale, torch::Tensor table,
                                           torch::Tensor bias, torch::Tensor inv_scale, torch::Tensor thr,
                                           int64_t T_in, int64_t Tw, bool is_signed, int64_t isa) {
  check_codes("aggregate_codes", isa, T_in, codes, table);
  const int64_t N = crow.size(0) - 1, F = codes.size(1), T = thr.size(0);
  TORCH_CHECK(scale.numel() == F && inv_scale.numel() == F, "aggregate_codes: one scale per feature");
  auto out_phase = torch::zeros({N, F}, torch::kInt8);
  auto out_sign = is_signed ? torch::zeros({N, F}, torch::kInt8) : torch::Tensor();
#ifdef SPIKEGCN_X86
  const float* b = bias.numel() ? bias.data_ptr<float>() : nullptr;
  int8_t* s = is_signed ? out_sign.data_ptr<int8_t>() : nullptr;
  const int k0 = (int)std::min(Tw + 1, T_in), nl = (int)T_in - k0;  // late phases k0+1 .. T_in
  const CodeTables t(table, scale, T_in, F);
  std::vector<float> bias_p(b ? F + 16 : 0, 0.f), inv_p(F + 16, 0.f);  // whole blocks: the tail lanes read zeros
  if (b) std::copy(b, b + F, bias_p.begin());
  std::copy(inv_scale.data_ptr<float>(), inv_scale.data_ptr<float>() + F, inv_p.begin());
  const FireArgs fire{b ? bias_p.data() : nullptr, inv_p.data(), thr.data_ptr<float>(), T, is_signed,
                      out_phase.data_ptr<int8_t>(), s};
  dispatch_blocks(isa, crow, col, val, codes, F, k0, nl, t, [&](const auto& block, const auto* rows) {
    run_codes(block, rows, N, fire);
  });
#endif
  return {out_phase, out_sign};
}

// The late-phase bins of A-hat x for input codes [N_in, F] (sign x phase, int8): out[N, T_in - k0, F], bin q holding
// the sum over the row's edges of the values fired at phase k0 + 1 + q.
torch::Tensor aggregate_bins(torch::Tensor crow, torch::Tensor col, torch::Tensor val, torch::Tensor codes,
                             torch::Tensor scale, torch::Tensor table, int64_t T_in, int64_t k0, int64_t isa) {
  check_codes("aggregate_bins", isa, T_in, codes, table);
  TORCH_CHECK(k0 >= 0 && k0 < T_in, "aggregate_bins: k0 must lie in 0 .. T_in - 1");
  const int64_t N = crow.size(0) - 1, F = codes.size(1), nl = T_in - k0;
  TORCH_CHECK(scale.numel() == F, "aggregate_bins: one scale per feature");
  auto out = empty_huge({N, nl, F}, torch::kFloat32);
#ifdef SPIKEGCN_X86
  const CodeTables t(table, scale, T_in, F);
  dispatch_blocks(isa, crow, col, val, codes, F, (int)k0, (int)nl, t, [&](const auto& block, const auto* rows) {
    run_bins(block, rows, N, F, nl, out.data_ptr<float>());
  });
#endif
  return out;
}

void register_conv_exact(pybind11::module_& m);  // conv_exact.cpp: exact-mode CNN layers
void register_codec(pybind11::module_& m);        // codec_cpu.cpp: encoder, decoder, fused firing pass
void register_binary_codec(pybind11::module_& m);  // binary_codec.cpp: binary input code, spike counts
void register_late_lists(pybind11::module_& m);   // late_lists.cpp: late-spike lists of the exact CNN layers
void register_dense_exact(pybind11::module_& m);  // dense_exact.cpp: exact-mode dense layers
void register_aggregate_bits(pybind11::module_& m);  // aggregate_bits.cpp: late bins of binary input

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_conv_exact(m);
  register_codec(m);
  register_binary_codec(m);
  register_late_lists(m);
  register_dense_exact(m);
  register_aggregate_bits(m);
  m.def("aggregate_exact", &aggregate_exact, "exact-mode aggregation, portable float kernel");
  m.def("aggregate_codes", &aggregate_codes, "exact-mode aggregation, int8-code AVX2 / AVX-512 kernels");
  m.def("aggregate_bins", &aggregate_bins, "late-phase bins of the aggregation, int8-code AVX2 / AVX-512 kernels");
  m.def("cpu_isa", &cpu_isa, "2: AVX-512, 1: AVX2, 0: neither");
}
