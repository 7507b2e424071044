// Single-spike codec kernels of spikegcn: the encoder (with its saturation and spike counts), the decoder and the
// CNN layers' fused firing pass (encode_join). Part of the module built from fused_cpu.cpp (registered there).
#include <torch/extension.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "huge_pages.h"       // empty_huge: large outputs on transparent huge pages
#include "position_counts.h"  // per-thread spike counts per position, PARALLEL_MIN

int64_t cpu_isa();  // fused_cpu.cpp

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
// Returns the largest phase seen as an unsigned byte (a negative phase reads as >= 128): the caller refuses the
// result when it is past the table (nt entries), whose index is clamped to 0 meanwhile (no read outside it).
__attribute__((always_inline))
static inline uint8_t decode_run(const int8_t* p, const int8_t* s, const float* tb, int64_t nt, const float* sc,
                                 bool per_elem, int64_t len, float* o) {
  uint8_t mx = 0;
  for (int64_t j = 0; j < len; ++j) mx = std::max(mx, (uint8_t)p[j]);
  const auto at = [tb, nt](int8_t q) { return tb[(uint8_t)q < nt ? (uint8_t)q : 0]; };
  if (per_elem) {
    for (int64_t j = 0; j < len; ++j) o[j] = at(p[j]) * sc[j];
  } else {
    const float c = sc[0];
    for (int64_t j = 0; j < len; ++j) o[j] = at(p[j]) * c;
  }
  if (s)
    for (int64_t j = 0; j < len; ++j) o[j] *= (float)s[j];
  return mx;
}

// The encoders' table for at most 31 ascending thresholds (search_table): ts, the thresholds NaN-padded to 32, which
// the AVX-512 encoder searches in two registers; with `bucket`, a first guess: a float's bit pattern orders the
// non-negative floats, so bits >> shift, less base, names an interval holding at most one threshold (checked when
// built), with cand[bucket] thresholds below it: #(thresholds <= a) = cand + (a >= ts[cand]). Bucket 0 also takes
// everything below (negative bit patterns included), bucket 31 everything above.
struct alignas(64) SearchTable {
  float ts[32];
  int32_t cand[32];
  int32_t shift = 0, base = 0;
  bool bucket = false;
};
using EncodeFn = void (*)(const float*, int64_t, const float*, int64_t, const SearchTable*, bool, int8_t*, int8_t*,
                          CodecCounts&);
// tb32: the value table zero-padded to 32 entries (64-byte aligned) when it has at most 32, else nullptr
using DecodeFn = uint8_t (*)(const int8_t*, const int8_t*, const float*, int64_t, const float*, const float*, bool,
                             int64_t, float*);
static void encode_base(const float* x, int64_t n, const float* th, int64_t T, const SearchTable*, bool sg, int8_t* pp,
                        int8_t* sp, CodecCounts& c) { encode_block(x, n, th, T, sg, pp, sp, c); }

// The buckets of a SearchTable for T ascending positive finite thresholds: the finest that span them in 32 buckets
// with at most one threshold in each (the thresholds ascend, so one per bucket means no two share a bucket index).
static bool fill_buckets(SearchTable& tab, const float* th, int64_t T) {
  if (T < 1 || !(th[0] > 0.f) || !(th[T - 1] <= FLT_MAX)) return false;
  const auto bits = [](float f) { int32_t b; std::memcpy(&b, &f, sizeof b); return b; };
  for (int32_t shift = 16; shift <= 23; ++shift) {
    const int32_t base = bits(th[0]) >> shift;
    int32_t idx[32];
    bool ok = true;
    for (int64_t t = 0; t < T && ok; ++t) {
      idx[t] = std::min((bits(th[t]) >> shift) - base, 31);
      ok = t == 0 || idx[t] != idx[t - 1];
    }
    if (!ok) continue;
    for (int32_t b = 0; b < 32; ++b)
      tab.cand[b] = (int32_t)(std::lower_bound(idx, idx + T, b) - idx);  // thresholds in buckets below b
    tab.shift = shift;
    tab.base = base;
    return tab.bucket = true;
  }
  return false;
}

// The table for T thresholds, or nullptr when there are more than 31 or they do not ascend (linear counting).
static const SearchTable* search_table(const float* th, int64_t T, SearchTable& tab) {
  if (T > 31) return nullptr;
  for (int64_t t = 1; t < T; ++t)
    if (!(th[t - 1] <= th[t])) return nullptr;
  std::fill(tab.ts, tab.ts + 32, NAN);
  std::copy(th, th + T, tab.ts);
  tab.bucket = false;
  fill_buckets(tab, th, T);
  return &tab;
}
static uint8_t decode_base(const int8_t* p, const int8_t* s, const float* tb, int64_t nt, const float*,
                           const float* sc, bool pe, int64_t n, float* o) {
  return decode_run(p, s, tb, nt, sc, pe, n, o);
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
// The largest of the 16 unsigned bytes of m.
static inline uint8_t max_epu8(__m128i m) {
  alignas(16) uint8_t b[16];
  _mm_store_si128((__m128i*)b, m);
  return *std::max_element(b, b + 16);
}
// The encoder with each vector's 16 (8) counters held in a register across the threshold loop: one compare and
// one masked add per threshold; the counts come from the compare masks. Block tails: encode_block.
// AVX-512 with a search table (at most 31 ascending thresholds: the encoders' case): with buckets, the count is the
// bucket's guess plus one compare (a NaN counts none, as the compares give it); else a branchless binary search over
// the table in two registers: "a >= ts[k]" holds for exactly the first count entries (NaN pads never), so 5 permutes
// and compares find the same count.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))
static void encode_512(const float* x, int64_t n, const float* th, int64_t T, const SearchTable* st, bool sg,
                       int8_t* pp, int8_t* sp, CodecCounts& c) {
  const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)), fmax = _mm512_set1_ps(FLT_MAX);
  const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
  const __m512i vT1 = _mm512_set1_epi32((int)T + 1), ione = _mm512_set1_epi32(1), izero = _mm512_setzero_si512();
  const bool search = st != nullptr, bucket = search && st->bucket;
  const __m512 tlo = search ? _mm512_load_ps(st->ts) : zero, thi = search ? _mm512_load_ps(st->ts + 16) : zero;
  const __m512i clo = bucket ? _mm512_load_si512(st->cand) : izero;
  const __m512i chi = bucket ? _mm512_load_si512(st->cand + 16) : izero;
  const __m512i vbase = _mm512_set1_epi32(bucket ? st->base : 0), last = _mm512_set1_epi32(31);
  const __m128i shift = _mm_cvtsi32_si128(bucket ? st->shift : 0);
  int64_t bad = 0, sat = 0, fired = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i), m = _mm512_and_ps(v, absm), a = sg ? m : v;
    bad += 16 - __builtin_popcount(_mm512_cmp_ps_mask(m, fmax, _CMP_LE_OQ));
    sat += __builtin_popcount(_mm512_cmp_ps_mask(a, one, _CMP_GT_OQ));
    __m512i cnt = izero;
    if (bucket) {
      const __m512i b = _mm512_sub_epi32(_mm512_sra_epi32(_mm512_castps_si512(a), shift), vbase);
      cnt = _mm512_permutex2var_epi32(clo, _mm512_min_epi32(_mm512_max_epi32(b, izero), last), chi);
      const __mmask16 ge = _mm512_cmp_ps_mask(a, _mm512_permutex2var_ps(tlo, cnt, thi), _CMP_GE_OQ);
      cnt = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), _mm512_mask_add_epi32(cnt, ge, cnt, ione));
    } else if (search) {
      for (int step = 16; step; step >>= 1) {
        const __m512i cand = _mm512_add_epi32(cnt, _mm512_set1_epi32(step));
        const __m512 tv = _mm512_permutex2var_ps(tlo, _mm512_sub_epi32(cand, ione), thi);
        cnt = _mm512_mask_mov_epi32(cnt, _mm512_cmp_ps_mask(a, tv, _CMP_GE_OQ), cand);
      }
    } else {
      for (int64_t t = 0; t < T; ++t)
        cnt = _mm512_mask_add_epi32(cnt, _mm512_cmp_ps_mask(a, _mm512_set1_ps(th[t]), _CMP_GE_OQ), cnt, ione);
    }
    const __mmask16 f = _mm512_cmpneq_epi32_mask(cnt, izero);
    fired += __builtin_popcount(f);
    _mm_storeu_si128((__m128i*)(pp + i), _mm512_cvtepi32_epi8(_mm512_maskz_sub_epi32(f, vT1, cnt)));
    if (sp) {
      const __mmask16 gt = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ) & f;
      const __mmask16 lt = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ) & f;
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

__attribute__((target("avx2,popcnt")))
static void encode_256(const float* x, int64_t n, const float* th, int64_t T, const SearchTable*, bool sg, int8_t* pp,
                       int8_t* sp, CodecCounts& c) {
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
static uint8_t decode_512(const int8_t* p, const int8_t* s, const float* tb, int64_t nt, const float* tb32,
                          const float* sc, bool pe, int64_t n, float* o) {
  // the table in two registers: one two-source permute per 16 phases instead of 16 gathered loads
  int64_t j = 0;
  __m128i mx = _mm_setzero_si128();
  if (tb32) {
    const __m512 lo = _mm512_load_ps(tb32), hi = _mm512_load_ps(tb32 + 16), c = _mm512_set1_ps(sc[0]);
    for (; j + 16 <= n; j += 16) {
      const __m128i b = _mm_loadu_si128((const __m128i*)(p + j));
      mx = _mm_max_epu8(mx, b);
      const __m512i idx = _mm512_cvtepi8_epi32(b);
      __m512 v = _mm512_mul_ps(_mm512_permutex2var_ps(lo, idx, hi), pe ? _mm512_loadu_ps(sc + j) : c);
      if (s) {
        const __m512i si = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(s + j)));
        v = _mm512_mul_ps(v, _mm512_cvtepi32_ps(si));
      }
      _mm512_storeu_ps(o + j, v);
    }
  }
  return std::max(max_epu8(mx), decode_run(p + j, s ? s + j : nullptr, tb, nt, sc + (pe ? j : 0), pe, n - j, o + j));
}
__attribute__((target("avx2")))
static uint8_t decode_256(const int8_t* p, const int8_t* s, const float* tb, int64_t nt, const float* tb32,
                          const float* sc, bool pe, int64_t n, float* o) {
  // four 8-entry permutes blended on bits 3 and 4 of the phase (as the graph kernel's weighted8)
  int64_t j = 0;
  __m128i mx = _mm_setzero_si128();
  if (tb32) {
    const __m256 t0 = _mm256_load_ps(tb32), t1 = _mm256_load_ps(tb32 + 8), t2 = _mm256_load_ps(tb32 + 16);
    const __m256 t3 = _mm256_load_ps(tb32 + 24), c = _mm256_set1_ps(sc[0]);
    for (; j + 8 <= n; j += 8) {
      const __m128i b = _mm_loadl_epi64((const __m128i*)(p + j));
      mx = _mm_max_epu8(mx, b);
      const __m256i a = _mm256_cvtepi8_epi32(b);
      const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(a, 28));
      const __m256 b4 = _mm256_castsi256_ps(_mm256_slli_epi32(a, 27));
      const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, a), _mm256_permutevar8x32_ps(t1, a), b3);
      const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t2, a), _mm256_permutevar8x32_ps(t3, a), b3);
      __m256 v = _mm256_mul_ps(_mm256_blendv_ps(lo, hi, b4), pe ? _mm256_loadu_ps(sc + j) : c);
      if (s) v = _mm256_mul_ps(v, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(s + j)))));
      _mm256_storeu_ps(o + j, v);
    }
  }
  return std::max(max_epu8(mx), decode_run(p + j, s ? s + j : nullptr, tb, nt, sc + (pe ? j : 0), pe, n - j, o + j));
}
#endif

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
  SearchTable tab;
  const SearchTable* st = search_table(th, T, tab);
  int8_t* pp = phase.data_ptr<int8_t>();
  int8_t* sp = is_signed ? sign.data_ptr<int8_t>() : nullptr;
  const int64_t BS = 256, nb = (n + BS - 1) / BS;
  int64_t bad = 0, sat = 0, fired = 0;
  #pragma omp parallel for schedule(static) reduction(+:bad, sat, fired) if (n >= PARALLEL_MIN)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * BS;
    CodecCounts c;
    enc(xp + i0, std::min(BS, n - i0), th, T, st, is_signed, pp + i0, sp ? sp + i0 : nullptr, c);
    bad += c.bad; sat += c.sat; fired += c.fired;
  }
  return {phase, sign, torch::tensor({bad, sat, fired}, torch::kInt64)};
}

// Decoding: value = sign * scale[channel] * table[phase], channels in the last dimension (scale may be 1 entry,
// then the tensor is decoded in runs of 4096 whatever its shape). Also returns the largest phase as an unsigned
// byte (the range check in the same pass: the caller refuses the values when it exceeds T).
std::tuple<torch::Tensor, int64_t> decode_phase(torch::Tensor phase, torch::Tensor sign, torch::Tensor table,
                                                torch::Tensor scale) {
  static const DecodeFn dec = SPIKEGCN_WIDEST(decode);
  alignas(64) float tb32[32] = {0};
  const bool small = table.numel() <= 32;
  if (small) std::copy(table.data_ptr<float>(), table.data_ptr<float>() + table.numel(), tb32);
  const int64_t n = phase.numel(), C = scale.numel();
  const int64_t last = C == 1 ? 4096 : (phase.dim() ? phase.size(-1) : 1);
  auto out = empty_huge(phase.sizes(), torch::kFloat32);
  const int8_t* pp = phase.data_ptr<int8_t>();
  const int8_t* sp = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  const float* tb = table.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t runs = (n + last - 1) / last, nt = table.numel();
  int64_t mx = 0;
  #pragma omp parallel for schedule(static) reduction(max : mx) if (n >= PARALLEL_MIN)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t j0 = r * last;
    mx = std::max<int64_t>(mx, dec(pp + j0, sp ? sp + j0 : nullptr, tb, nt, small ? tb32 : nullptr, sc, C != 1,
                                   std::min(last, n - j0), op + j0));
  }
  return {out, mx};
}

// Closed-form firing of a CNN layer, fused after its convolution: the potential z ([N, C, positions], the
// convolution's output) plus an optional diagonal shortcut (value sv[n, c - pad_front, h * sh, w * sw] times
// weight[c] for 0 <= c - pad_front < Cin: identity or option-A residual joins), plus an optional bias[c], added
// in that order in float32, exactly as the torch path does (z.add_(sv * w); z.add_(bias): one product and two
// rounded sums, no FMA), then encoded as encode_phase does, in blocks of one row. With a value table, z is
// overwritten with the output's decoded values (sign * table[phase], as decode_phase with scale 1): the next
// layer's input, with no decode pass. With count_positions the same pass counts the output's spikes per position
// (summed over N and C, as count_per_position does on the phases). -> {phase, sign (undefined unless signed),
// int64 [non-finite, saturated, fired], int64 [positions] spike counts (empty without count_positions)}.
struct JoinArgs {
  float* zp; const float *bp, *svp, *swp, *th; const SearchTable* st; int8_t *pp, *sp; const float* tb32;
  int64_t C, R, P, T, nt, Cin, Hin, Win, W, pad_front, sh, sww; bool is_signed, dense_sc;
  int64_t* counts;  // [P] spike counts per position, or nullptr
};

struct JoinTotals { int64_t bad = 0, sat = 0, fired = 0; };

// encode len potentials v into the elements from i0 on (then, with a table, their decoded values into z)
static inline void join_fire(const JoinArgs& a, const float* v, int64_t i0, int64_t len, CodecCounts& cnt) {
  static const EncodeFn enc = SPIKEGCN_WIDEST(encode);
  static const DecodeFn dec = SPIKEGCN_WIDEST(decode);
  static const float one = 1.f;
  enc(v, len, a.th, a.T, a.st, a.is_signed, a.pp + i0, a.sp ? a.sp + i0 : nullptr, cnt);
  if (a.nt) dec(a.pp + i0, a.sp ? a.sp + i0 : nullptr, a.tb32, a.nt, a.tb32, &one, false, len, a.zp + i0);
}

// Rows of under 32 positions without a shortcut: flat blocks of 256, channel and position stepped along.
static JoinTotals join_flat(const JoinArgs& a) {
  const int64_t n = a.R * a.P, nb = (n + 255) / 256;
  int64_t bad = 0, sat = 0, fired = 0;
  #pragma omp parallel reduction(+:bad, sat, fired) if (n >= PARALLEL_MIN)
  {
    PositionCounts pc(a.counts, a.P);
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t i0 = b * 256, len = std::min<int64_t>(256, n - i0);
      alignas(64) float v[256];
      int64_t o = i0 % a.P, c = (i0 / a.P) % a.C;
      for (int64_t k = 0; k < len; ++k) {
        v[k] = a.bp ? a.zp[i0 + k] + a.bp[c] : a.zp[i0 + k];
        if (++o == a.P) { o = 0; if (++c == a.C) c = 0; }
      }
      CodecCounts cnt;
      join_fire(a, v, i0, len, cnt);
      for (int64_t k = 0, q = i0 % a.P; k < len; k += a.P - q, q = 0)  // the block's runs within rows
        pc.add(a.pp + i0 + k, q, std::min(len - k, a.P - q), is_spike);
      pc.added(len);  // at most one per row of the block
      bad += cnt.bad; sat += cnt.sat; fired += cnt.fired;
    }
    pc.merge();
  }
  return {bad, sat, fired};
}

// Row r (n, c) in runs of 256: potential + shortcut (contiguous, or strided: a run per output line) + bias, then
// fired and counted. Cloned per instruction set (the widest the CPU has is called): the
// copy, shortcut, bias and count loops are a third of the pass, and the baseline build runs them 4 floats wide.
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void join_row(const JoinArgs& a, int64_t r, PositionCounts& pc, CodecCounts& cnt) {
  const int64_t c = r % a.C, ci = c - a.pad_front, P = a.P, W = a.W;
  const float* srow = (a.svp && ci >= 0 && ci < a.Cin) ? a.svp + ((r / a.C) * a.Cin + ci) * a.Hin * a.Win : nullptr;
  const float wc = srow ? a.swp[c] : 0.f, bc = a.bp ? a.bp[c] : 0.f;
  const float* zr = a.zp + r * P;
  alignas(64) float v[256];
  for (int64_t j = 0; j < P; j += 256) {
    const int64_t len = std::min<int64_t>(256, P - j);
    if (srow && a.dense_sc) {
      for (int64_t k = 0; k < len; ++k) v[k] = zr[j + k] + srow[j + k] * wc;
    } else if (srow) {  // a run per output line; stride 2 (option-A shortcuts) is its own loop, so it vectorises
      for (int64_t k = 0, h = j / W, w = j % W; k < len; k += W - w, w = 0, ++h) {
        const float* in = srow + h * a.sh * a.Win + w * a.sww;
        const int64_t run = std::min(W - w, len - k);
        if (a.sww == 2) {
          for (int64_t q = 0; q < run; ++q) v[k + q] = zr[j + k + q] + in[2 * q] * wc;
        } else {
          for (int64_t q = 0; q < run; ++q) v[k + q] = zr[j + k + q] + in[q * a.sww] * wc;
        }
      }
    } else {
      for (int64_t k = 0; k < len; ++k) v[k] = zr[j + k];
    }
    if (a.bp)
      for (int64_t k = 0; k < len; ++k) v[k] = v[k] + bc;
    join_fire(a, v, r * P + j, len, cnt);
    pc.add(a.pp + r * P + j, j, len, is_spike);
  }
}

// One row (n, c) at a time (join_row), rows split over the threads.
static JoinTotals join_rows(const JoinArgs& a) {
  int64_t bad = 0, sat = 0, fired = 0;
  #pragma omp parallel reduction(+:bad, sat, fired) if (a.R * a.P >= PARALLEL_MIN)
  {
    PositionCounts pc(a.counts, a.P);
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < a.R; ++r) {
      CodecCounts cnt;
      join_row(a, r, pc, cnt);
      pc.added(1);
      bad += cnt.bad; sat += cnt.sat; fired += cnt.fired;
    }
    pc.merge();
  }
  return {bad, sat, fired};
}

std::vector<torch::Tensor> encode_join(torch::Tensor z, torch::Tensor bias, torch::Tensor sv, torch::Tensor sw,
                                       int64_t pad_front, int64_t sh, int64_t sww, torch::Tensor thr_asc,
                                       bool is_signed, torch::Tensor table, bool count_positions) {
  TORCH_CHECK(z.dim() >= 2 && z.scalar_type() == torch::kFloat32 && z.is_contiguous(),
              "encode_join: z must be a contiguous float32 [N, C, ...] tensor");
  const int64_t C = z.size(1), R = z.size(0) * C;
  int64_t P = 1;  // positions per row (an empty batch keeps them)
  for (int64_t d = 2; d < z.dim(); ++d) P *= z.size(d);
  TORCH_CHECK(!bias.numel() || bias.numel() == C, "encode_join: bias needs one entry per channel");
  const bool has_sc = sv.numel() > 0;
  int64_t Cin = 0, Hin = 0, Win = 0, W = 1;
  if (has_sc) {
    TORCH_CHECK(z.dim() == 4 && sv.dim() == 4 && sv.size(0) == z.size(0) && sw.numel() == C && sv.is_contiguous(),
                "encode_join: the shortcut needs [N, Cin, H, W] values and one weight per output channel");
    Cin = sv.size(1); Hin = sv.size(2); Win = sv.size(3); W = z.size(3);
    TORCH_CHECK(sh >= 1 && sww >= 1 && pad_front >= 0 && pad_front + Cin <= C && (Hin + sh - 1) / sh == z.size(2) &&
                    (Win + sww - 1) / sww == W,
                "encode_join: the shortcut's channels or subsampled positions do not match the output");
  }
  auto phase = torch::empty_like(z, torch::kInt8);
  auto sign = is_signed ? torch::empty_like(z, torch::kInt8) : torch::Tensor();
  auto counts = torch::zeros({count_positions ? P : 0}, torch::kInt64);
  alignas(64) float tb32[32] = {0};
  const int64_t nt = table.numel();
  if (nt) {
    TORCH_CHECK(nt <= 32, "encode_join: the value table has at most 32 entries");
    std::copy(table.data_ptr<float>(), table.data_ptr<float>() + nt, tb32);
  }
  SearchTable ts;
  const SearchTable* st = search_table(thr_asc.data_ptr<float>(), thr_asc.numel(), ts);
  const JoinArgs a{z.data_ptr<float>(), bias.numel() ? bias.data_ptr<float>() : nullptr,
                   has_sc ? sv.data_ptr<float>() : nullptr, has_sc ? sw.data_ptr<float>() : nullptr,
                   thr_asc.data_ptr<float>(), st, phase.data_ptr<int8_t>(),
                   is_signed ? sign.data_ptr<int8_t>() : nullptr, tb32, C, R, P, thr_asc.numel(), nt, Cin, Hin,
                   Win, W, pad_front, sh, sww, is_signed,
                   has_sc && sh == 1 && sww == 1 && Win == W,  // the shortcut row is contiguous
                   count_positions && P > 0 ? counts.data_ptr<int64_t>() : nullptr};
  const JoinTotals t = (!has_sc && P < 32) ? join_flat(a) : join_rows(a);
  return {phase, sign, torch::tensor({t.bad, t.sat, t.fired}, torch::kInt64), counts};
}

// For Python callers: advise a freshly allocated (not yet written) CPU tensor's pages, as empty_huge does.
void advise_huge_pages(torch::Tensor t) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "advise_huge_pages: a contiguous CPU tensor");
  advise_huge(t.data_ptr(), t.nbytes());
}

void register_codec(pybind11::module_& m) {
  m.def("encoder_table", [](torch::Tensor thr_asc) {  // tests: the bucket shift, -1 binary search, -2 linear count
    SearchTable tab;
    const SearchTable* st = search_table(thr_asc.contiguous().data_ptr<float>(), thr_asc.numel(), tab);
    return st == nullptr ? -2 : (st->bucket ? st->shift : -1); }, "the encoders' table for ascending thresholds");
  m.def("advise_huge_pages", &advise_huge_pages, "transparent huge pages for a new tensor's memory (a hint)");
  m.def("encode_phase", &encode_phase, "single-spike encoding of float32 values (+ non-finite, saturated, fired)");
  m.def("decode_phase", &decode_phase, "decoding of int8 fire phases to float32");
  m.def("encode_join", &encode_join,
        "closed-form firing after a convolution: + diagonal shortcut + bias, encoded (optionally decoded in place, "
        "optionally counting the spikes per position)");
}
