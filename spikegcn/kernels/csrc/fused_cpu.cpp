// Fused CPU kernels of spikegcn: single-spike encoding / decoding and exact-mode graph aggregation (Tw < T).
// Built explicitly (`spikegcn build-kernels`, or `make install`) by spikegcn/kernels/fused_cpu.py into a cache
// folder keyed by torch, Python, compiler, flags, machine and this file's hash; see that module's docstring.
#include <torch/extension.h>
#include <vector>
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string>
#include <cmath>

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

// Single-spike encoding: fire phase = T + 1 - #(thresholds <= a), 0 when none is reached (the same comparisons
// as the torch.searchsorted path in spikegcn.coding.encode). Blocks of 256 elements, the threshold loop outside
// and 32-bit counters so that the compares vectorise at the CPU's full width (one copy of the loop per
// instruction set, picked at run time). The same pass counts non-finite inputs (the caller needs no check pass),
// saturated neurons (|a| > 1: clipped to phase 1) and fired neurons (the layer's output spike count).
struct CodecCounts { int64_t bad = 0, sat = 0, fired = 0; };

__attribute__((always_inline))
static inline void encode_block(const float* x, int64_t len, const float* th, int64_t T, bool is_signed, int8_t* pp,
                                int8_t* sp, CodecCounts& c) {
  float a[256];
  int32_t cnt[256];
  int32_t bad = 0, sat = 0, fired = 0;
  for (int64_t i = 0; i < len; ++i) {
    const float v = x[i], m = std::fabs(v);
    bad += !(m <= FLT_MAX);
    a[i] = is_signed ? m : v;
    sat += a[i] > 1.f;
    cnt[i] = 0;
  }
  for (int64_t t = 0; t < T; ++t) {
    const float h = th[t];
    for (int64_t i = 0; i < len; ++i) cnt[i] += a[i] >= h;
  }
  for (int64_t i = 0; i < len; ++i) {
    pp[i] = (int8_t)(cnt[i] ? T + 1 - cnt[i] : 0);
    fired += cnt[i] != 0;
  }
  if (sp)
    for (int64_t i = 0; i < len; ++i) sp[i] = (int8_t)(((x[i] > 0) - (x[i] < 0)) * (cnt[i] != 0));
  c.bad += bad; c.sat += sat; c.fired += fired;
}

// Decoding of one run of phases: value = sign * scale * table[phase], the scale per element of the run or one.
__attribute__((always_inline))
static inline void decode_run(const int8_t* p, const int8_t* s, const float* tb, const float* sc, bool per_elem,
                              int64_t len, float* o) {
  if (per_elem) {
    for (int64_t j = 0; j < len; ++j) o[j] = tb[p[j]] * sc[j];
  } else {
    const float c = sc[0];
    for (int64_t j = 0; j < len; ++j) o[j] = tb[p[j]] * c;
  }
  if (s)
    for (int64_t j = 0; j < len; ++j) o[j] *= (float)s[j];
}

using EncodeFn = void (*)(const float*, int64_t, const float*, int64_t, bool, int8_t*, int8_t*, CodecCounts&);
using DecodeFn = void (*)(const int8_t*, const int8_t*, const float*, const float*, bool, int64_t, float*);
static void encode_base(const float* x, int64_t n, const float* th, int64_t T, bool sg, int8_t* pp, int8_t* sp,
                        CodecCounts& c) { encode_block(x, n, th, T, sg, pp, sp, c); }
static void decode_base(const int8_t* p, const int8_t* s, const float* tb, const float* sc, bool pe, int64_t n,
                        float* o) { decode_run(p, s, tb, sc, pe, n, o); }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
// The encoder with each vector's 16 (8) counters held in a register across the threshold loop: one compare and
// one masked add per threshold; the counts come from the compare masks. Block tails: encode_block.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void encode_512(const float* x, int64_t n, const float* th, int64_t T, bool sg, int8_t* pp, int8_t* sp,
                       CodecCounts& c) {
  const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), fmax = _mm512_set1_ps(FLT_MAX);
  const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
  const __m512i vT1 = _mm512_set1_epi32((int)T + 1), ione = _mm512_set1_epi32(1), izero = _mm512_setzero_si512();
  int64_t bad = 0, sat = 0, fired = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i), m = _mm512_and_ps(v, absm), a = sg ? m : v;
    bad += 16 - __builtin_popcount(_mm512_cmp_ps_mask(m, fmax, _CMP_LE_OQ));
    sat += __builtin_popcount(_mm512_cmp_ps_mask(a, one, _CMP_GT_OQ));
    __m512i cnt = izero;
    for (int64_t t = 0; t < T; ++t)
      cnt = _mm512_mask_add_epi32(cnt, _mm512_cmp_ps_mask(a, _mm512_set1_ps(th[t]), _CMP_GE_OQ), cnt, ione);
    const __mmask16 f = _mm512_cmpneq_epi32_mask(cnt, izero);
    fired += __builtin_popcount(f);
    _mm_storeu_si128((__m128i*)(pp + i), _mm512_cvtepi32_epi8(_mm512_maskz_sub_epi32(f, vT1, cnt)));
    if (sp) {
      const __mmask16 gt = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ) & f, lt = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ) & f;
      const __m512i sv = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(gt, ione), lt, _mm512_set1_epi32(-1));
      _mm_storeu_si128((__m128i*)(sp + i), _mm512_cvtepi32_epi8(sv));
    }
  }
  c.bad += bad; c.sat += sat; c.fired += fired;
  if (i < n) encode_block(x + i, n - i, th, T, sg, pp + i, sp ? sp + i : nullptr, c);
}

__attribute__((target("avx2")))
static inline void store8_epi32_as_epi8(int8_t* dst, __m256i v) {  // values in -128..127
  const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64((__m128i*)dst, _mm_packs_epi16(p16, p16));
}

__attribute__((target("avx2")))
static void encode_256(const float* x, int64_t n, const float* th, int64_t T, bool sg, int8_t* pp, int8_t* sp,
                       CodecCounts& c) {
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), fmax = _mm256_set1_ps(FLT_MAX);
  const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
  const __m256i vT1 = _mm256_set1_epi32((int)T + 1), izero = _mm256_setzero_si256();
  int64_t bad = 0, sat = 0, fired = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i), m = _mm256_and_ps(v, absm), a = sg ? m : v;
    bad += 8 - __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(m, fmax, _CMP_LE_OQ)));
    sat += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(a, one, _CMP_GT_OQ)));
    __m256i cnt = izero;
    for (int64_t t = 0; t < T; ++t)  // a true compare is all ones (-1): subtracting it counts
      cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(th[t]), _CMP_GE_OQ)));
    const __m256i f = _mm256_cmpgt_epi32(cnt, izero);
    fired += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(f)));
    store8_epi32_as_epi8(pp + i, _mm256_and_si256(f, _mm256_sub_epi32(vT1, cnt)));
    if (sp) {
      const __m256i gt = _mm256_and_si256(f, _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_GT_OQ)));
      const __m256i lt = _mm256_and_si256(f, _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
      store8_epi32_as_epi8(sp + i, _mm256_sub_epi32(lt, gt));  // +1 above zero, -1 below
    }
  }
  c.bad += bad; c.sat += sat; c.fired += fired;
  if (i < n) encode_block(x + i, n - i, th, T, sg, pp + i, sp ? sp + i : nullptr, c);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void decode_512(const int8_t* p, const int8_t* s, const float* tb, const float* sc, bool pe, int64_t n,
                       float* o) { decode_run(p, s, tb, sc, pe, n, o); }
__attribute__((target("avx2")))
static void decode_256(const int8_t* p, const int8_t* s, const float* tb, const float* sc, bool pe, int64_t n,
                       float* o) { decode_run(p, s, tb, sc, pe, n, o); }
#endif

int64_t cpu_isa();

// The widest variant of a kernel this CPU runs (cpu_isa: 2 AVX-512, 1 AVX2, 0 neither or not x86).
template <typename Fn>
static Fn widest(Fn base, Fn avx2, Fn avx512) {
  const int64_t isa = cpu_isa();
  return isa == 2 ? avx512 : (isa == 1 ? avx2 : base);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPIKEGCN_WIDEST(name) widest(name##_base, name##_256, name##_512)
#else
#define SPIKEGCN_WIDEST(name) name##_base
#endif

// -> {phase, sign (undefined unless signed), int64 [non-finite, saturated, fired]}
std::vector<torch::Tensor> encode_phase(torch::Tensor x, torch::Tensor thr_asc, bool is_signed) {
  static const EncodeFn enc = SPIKEGCN_WIDEST(encode);
  const int64_t n = x.numel(), T = thr_asc.numel();
  auto phase = torch::empty_like(x, torch::kInt8);
  auto sign = is_signed ? torch::empty_like(x, torch::kInt8) : torch::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* th = thr_asc.data_ptr<float>();
  int8_t* pp = phase.data_ptr<int8_t>();
  int8_t* sp = is_signed ? sign.data_ptr<int8_t>() : nullptr;
  const int64_t BS = 256, nb = (n + BS - 1) / BS;
  int64_t bad = 0, sat = 0, fired = 0;
  #pragma omp parallel for schedule(static) reduction(+:bad, sat, fired)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * BS;
    CodecCounts c;
    enc(xp + i0, std::min(BS, n - i0), th, T, is_signed, pp + i0, sp ? sp + i0 : nullptr, c);
    bad += c.bad; sat += c.sat; fired += c.fired;
  }
  return {phase, sign, torch::tensor({bad, sat, fired}, torch::kInt64)};
}

// Decoding: value = sign * scale[channel] * table[phase], channels in the last dimension (scale may be 1 entry,
// then the tensor is decoded in runs of 4096 whatever its shape).
torch::Tensor decode_phase(torch::Tensor phase, torch::Tensor sign, torch::Tensor table, torch::Tensor scale) {
  static const DecodeFn dec = SPIKEGCN_WIDEST(decode);
  const int64_t n = phase.numel(), C = scale.numel();
  const int64_t last = C == 1 ? 4096 : (phase.dim() ? phase.size(-1) : 1);
  auto out = torch::empty(phase.sizes(), torch::kFloat32);
  const int8_t* pp = phase.data_ptr<int8_t>();
  const int8_t* sp = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  const float* tb = table.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t runs = (n + last - 1) / last;
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t j0 = r * last;
    dec(pp + j0, sp ? sp + j0 : nullptr, tb, sc, C != 1, std::min(last, n - j0), op + j0);
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
// One row m, one block of 16 features: the early sum and the late-phase bins stream the row's edges
// (branch-free: a compare and a masked add per late phase). NL >= 0: the NL bins live in registers; NL < 0: nl
// bins in memory (more than 16 late phases: rare, long codes with a short wait).
template <int NL, typename idx_t>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline))
static inline void row_block(idx_t e0, idx_t e1, const idx_t* col, const float* val, const int8_t* codes, int64_t F,
                             int64_t f0, __mmask16 tail, __m512 lut_lo, __m512 lut_hi, __m512 sc, int k0, int nl,
                             float* acc, float* H, int64_t Fp) {
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
  _mm512_store_ps(acc + f0, ac);
  for (int q = 0; q < NL; ++q) _mm512_store_ps(H + q * Fp + f0, h[q]);
}

// One (row, 16-feature block) of the AVX-512 kernel: picks the register-held variant for the number of late phases.
template <typename idx_t>
struct Block512 {
  const idx_t* col; const float* val; const int8_t* codes; int64_t F; int k0, nl; const float* tb; const float* sc;
  static constexpr int W = 16;
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
  void operator()(idx_t e0, idx_t e1, int64_t f0, float* acc, float* H, int64_t Fp) const {
    const __mmask16 tail = (F - f0 >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (F - f0)) - 1);
    const __m512 lut_lo = _mm512_load_ps(tb), lut_hi = _mm512_load_ps(tb + 16), s = _mm512_load_ps(sc + f0);
    switch (nl) {
#define SPIKEGCN_NL(n) case n: row_block<n>(e0, e1, col, val, codes, F, f0, tail, lut_lo, lut_hi, s, k0, nl, acc, H, Fp); break;
      SPIKEGCN_NL(0) SPIKEGCN_NL(1) SPIKEGCN_NL(2) SPIKEGCN_NL(3) SPIKEGCN_NL(4) SPIKEGCN_NL(5)
      SPIKEGCN_NL(6) SPIKEGCN_NL(7) SPIKEGCN_NL(8) SPIKEGCN_NL(9) SPIKEGCN_NL(10) SPIKEGCN_NL(11)
      SPIKEGCN_NL(12) SPIKEGCN_NL(13) SPIKEGCN_NL(14) SPIKEGCN_NL(15) SPIKEGCN_NL(16)
#undef SPIKEGCN_NL
      default: row_block<-1>(e0, e1, col, val, codes, F, f0, tail, lut_lo, lut_hi, s, k0, nl, acc, H, Fp);
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
                              int64_t Fp) {
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
  _mm256_store_ps(acc + f0, ac);
  for (int q = 0; q < NL; ++q) _mm256_store_ps(H + q * Fp + f0, h[q]);
}

// One (row, 8-feature block) of the AVX2 kernel.
template <typename idx_t>
struct Block256 {
  const idx_t* col; const float* val; const int8_t* codes; int64_t F; int k0, nl; const float* tb; const float* sc;
  static constexpr int W = 8;
  __attribute__((target("avx2")))
  void operator()(idx_t e0, idx_t e1, int64_t f0, float* acc, float* H, int64_t Fp) const {
    const Lut8 L{_mm256_load_ps(tb), _mm256_load_ps(tb + 8), _mm256_load_ps(tb + 16), _mm256_load_ps(tb + 24)};
    const __m256 s = _mm256_load_ps(sc + f0);
    switch (nl) {
#define SPIKEGCN_NL(n) case n: row_block8<n>(e0, e1, col, val, codes, F, f0, L, s, k0, nl, acc, H, Fp); break;
      SPIKEGCN_NL(0) SPIKEGCN_NL(1) SPIKEGCN_NL(2) SPIKEGCN_NL(3) SPIKEGCN_NL(4) SPIKEGCN_NL(5)
      SPIKEGCN_NL(6) SPIKEGCN_NL(7) SPIKEGCN_NL(8) SPIKEGCN_NL(9) SPIKEGCN_NL(10) SPIKEGCN_NL(11)
      SPIKEGCN_NL(12)
#undef SPIKEGCN_NL
      default: row_block8<-1>(e0, e1, col, val, codes, F, f0, L, s, k0, nl, acc, H, Fp);
    }
  }
};

static inline float* align64(std::vector<float>& v) {
  return (float*)(((uintptr_t)v.data() + 63) & ~(uintptr_t)63);
}

// Row loop of the vectorised kernels: block(...) fills the early sums and late-phase bins of one row's
// features f0 .. f0 + W - 1; fire_row turns them into fire phases.
template <typename Block, typename idx_t>
static void run_codes(const Block& block, const idx_t* crow, int64_t N, int64_t F, int64_t T, int64_t T_in,
                      int64_t Tw, bool is_signed, const float* bias, const float* inv_scale, const float* thr,
                      int8_t* out_phase, int8_t* out_sign) {
  const int64_t k0 = std::min(Tw + 1, T_in);
  const int64_t nc = (F + Block::W - 1) / Block::W, Fp = nc * Block::W;
  #pragma omp parallel
  {
    std::vector<float> accv(Fp + 16), Hv(block.nl * Fp + 16);
    float* acc = align64(accv);
    float* H = align64(Hv);
    #pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < N; ++m) {
      for (int64_t c = 0; c < nc; ++c) block(crow[m], crow[m + 1], c * Block::W, acc, H, Fp);
      fire_row(m, F, acc, H, -k0, Fp, k0, T, T_in, Tw, is_signed, bias, inv_scale, thr, out_phase, out_sign);
    }
  }
}
#endif

// 2: AVX-512 (F, BW, VL, DQ), 1: AVX2, 0: neither (or not x86).
// SPIKEGCN_CPU_ISA=portable|avx2|avx512 caps it, as in fused_cpu.max_isa (to test the narrower variants).
int64_t cpu_isa() {
  int64_t isa = 0;
#ifdef SPIKEGCN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    isa = 2;
  else
    isa = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
  const char* cap = std::getenv("SPIKEGCN_CPU_ISA");
  if (cap) {
    const std::string c(cap);
    if (c == "portable") isa = 0;
    else if (c == "avx2") isa = std::min<int64_t>(isa, 1);
  }
  return isa;
}

// codes: int8 [N, F], sign x fire phase of each input neuron; scale: [F] input lambda; table: [T_in + 1].
std::vector<torch::Tensor> aggregate_codes(torch::Tensor crow, torch::Tensor col, torch::Tensor val,
                                           torch::Tensor codes, torch::Tensor scale, torch::Tensor table,
                                           torch::Tensor bias, torch::Tensor inv_scale, torch::Tensor thr,
                                           int64_t T_in, int64_t Tw, bool is_signed, int64_t isa) {
  TORCH_CHECK(isa == 1 || isa == 2, "aggregate_codes: isa must be 1 (AVX2) or 2 (AVX-512)");
  TORCH_CHECK(isa <= cpu_isa(), "aggregate_codes: this CPU lacks the requested instruction set");
  TORCH_CHECK(T_in >= 1 && T_in <= 31, "aggregate_codes supports input codes with 1 <= T <= 31");
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kInt8 && codes.is_contiguous(),
              "aggregate_codes: codes must be a contiguous 2-D int8 tensor");
  TORCH_CHECK(table.numel() == T_in + 1, "aggregate_codes: the value table needs T_in + 1 entries");
  const int64_t N = crow.size(0) - 1, F = codes.size(1), T = thr.size(0);
  TORCH_CHECK(scale.numel() == F && inv_scale.numel() == F, "aggregate_codes: one scale per feature");
  auto out_phase = torch::zeros({N, F}, torch::kInt8);
  auto out_sign = is_signed ? torch::zeros({N, F}, torch::kInt8) : torch::Tensor();
#ifdef SPIKEGCN_X86
  const float* b = bias.numel() ? bias.data_ptr<float>() : nullptr;
  int8_t* s = is_signed ? out_sign.data_ptr<int8_t>() : nullptr;
  const int k0 = (int)std::min(Tw + 1, T_in), nl = (int)T_in - k0;  // late phases k0+1 .. T_in
  alignas(64) float tb[32] = {0};
  for (int64_t i = 0; i <= T_in; ++i) tb[i] = table.data_ptr<float>()[i];
  std::vector<float> scv(F + 32, 0.f);  // zero-padded to whole blocks, aligned
  float* sc = align64(scv);
  for (int64_t f = 0; f < F; ++f) sc[f] = scale.data_ptr<float>()[f];
#define SPIKEGCN_RUN(BLOCK, T_IDX)                                                                               \
  run_codes(BLOCK<T_IDX>{col.data_ptr<T_IDX>(), val.data_ptr<float>(), codes.data_ptr<int8_t>(), F, k0, nl, tb, sc}, \
            crow.data_ptr<T_IDX>(), N, F, T, T_in, Tw, is_signed, b, inv_scale.data_ptr<float>(),              \
            thr.data_ptr<float>(), out_phase.data_ptr<int8_t>(), s)
  const bool i32 = crow.scalar_type() == torch::kInt32;
  if (isa == 2) {
    if (i32) SPIKEGCN_RUN(Block512, int32_t); else SPIKEGCN_RUN(Block512, int64_t);
  } else {
    if (i32) SPIKEGCN_RUN(Block256, int32_t); else SPIKEGCN_RUN(Block256, int64_t);
  }
#undef SPIKEGCN_RUN
#endif
  return {out_phase, out_sign};
}

// Spikes per input position, summed over R = batch x channels rows of an [R, P] tensor in one pass (per-thread
// 32-bit counters over blocks of rows, then a reduction): the non-zeros of int8 one-spike phases, or the popcount
// of int32 / int64 binary codes (one spike per set bit). A convolution's exact addition count is
// sum_p count[p] * fan_out[p].
template <typename elem_t, typename Count>
static void count_rows(const elem_t* xp, int64_t R, int64_t P, Count count, int64_t* op) {
  #pragma omp parallel
  {
    std::vector<int32_t> acc(P, 0);
    int64_t rows = 0;
    #pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < R; ++r) {
      const elem_t* row = xp + r * P;
      int32_t* a = acc.data();
      #pragma omp simd
      for (int64_t p = 0; p < P; ++p) a[p] += count(row[p]);
      if (++rows == (1 << 20)) {  // keep the 32-bit counters far from overflow (<= 64 spikes per element)
        #pragma omp critical
        for (int64_t p = 0; p < P; ++p) op[p] += acc[p];
        std::fill(acc.begin(), acc.end(), 0);
        rows = 0;
      }
    }
    #pragma omp critical
    for (int64_t p = 0; p < P; ++p) op[p] += acc[p];
  }
}

torch::Tensor count_per_position(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "count_per_position: x must be a contiguous 2-D tensor");
  const int64_t R = x.size(0), P = x.size(1);
  auto out = torch::zeros({P}, torch::kInt64);
  int64_t* op = out.data_ptr<int64_t>();
  switch (x.scalar_type()) {
    case torch::kInt8:
      count_rows(x.data_ptr<int8_t>(), R, P, [](int8_t v) { return (int32_t)(v != 0); }, op);
      break;
    case torch::kInt32:
      count_rows(x.data_ptr<int32_t>(), R, P, [](int32_t v) { return (int32_t)__builtin_popcount((uint32_t)v); }, op);
      break;
    case torch::kInt64:
      count_rows(x.data_ptr<int64_t>(), R, P,
                 [](int64_t v) { return (int32_t)__builtin_popcountll((unsigned long long)v); }, op);
      break;
    default:
      TORCH_CHECK(false, "count_per_position: x must be int8 phases or int32 / int64 binary codes");
  }
  return out;
}

void register_conv_exact(pybind11::module_& m);  // conv_exact.cpp: exact-mode CNN layers

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_conv_exact(m);
  m.def("aggregate_exact", &aggregate_exact, "exact-mode aggregation, portable float kernel");
  m.def("aggregate_codes", &aggregate_codes, "exact-mode aggregation, int8-code AVX2 / AVX-512 kernels");
  m.def("cpu_isa", &cpu_isa, "2: AVX-512, 1: AVX2, 0: neither");
  m.def("encode_phase", &encode_phase, "single-spike encoding of float32 values");
  m.def("decode_phase", &decode_phase, "decoding of int8 fire phases to float32");
  m.def("count_per_position", &count_per_position, "non-zeros of an int8 [R, P] tensor per column");
}
