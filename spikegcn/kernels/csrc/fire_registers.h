// The neurons of the int8-code aggregation kernels (fused_cpu.cpp), fired from registers: a row's block of 16
// (AVX-512) or 8 (AVX2) features steps through the output phases with its early sum and late-phase bins held in
// vector registers, with fire_row's float operations, lane-parallel. Included by fused_cpu.cpp only, inside its
// x86 section (immintrin.h and SPIKEGCN_X86 come from there).
#pragma once

#include <algorithm>
#include <cstdint>

// What the vectorised kernels need to fire a row's neurons in registers: fire_row's float operations, lane-parallel
// (bias and inverse scales zero-padded to whole blocks; no bias: null).
struct FireArgs {
  const float* bias; const float* inv; const float* thr; int64_t T; bool is_signed; int8_t* out_phase;
  int8_t* out_sign;
};

// One output phase t of 16 neurons: the lanes still silent (left) whose |P / lambda| reaches thr[t - 1] fire now.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline))
static inline void check16(__m512 P, __m512 inv, int64_t t, const FireArgs& a, __mmask16& left, __m512i& ph,
                           __m512i& sg) {
  const __m512 v = _mm512_mul_ps(P, inv);
  const __m512 mag = a.is_signed ? _mm512_abs_ps(v) : v;
  const __mmask16 now = _mm512_mask_cmp_ps_mask(left, mag, _mm512_set1_ps(a.thr[t - 1]), _CMP_GE_OQ);
  ph = _mm512_mask_mov_epi32(ph, now, _mm512_set1_epi32((int)t));
  if (a.is_signed) {
    sg = _mm512_mask_mov_epi32(sg, _mm512_mask_cmp_ps_mask(now, v, _mm512_setzero_ps(), _CMP_GT_OQ),
                               _mm512_set1_epi32(1));
    sg = _mm512_mask_mov_epi32(sg, _mm512_mask_cmp_ps_mask(now, v, _mm512_setzero_ps(), _CMP_LT_OQ),
                               _mm512_set1_epi32(-1));
  }
  left &= (__mmask16)~now;
}

// Fire phases of row m's features f0 .. f0 + 15 from the early sum ac and the late bins (registers h for NL >= 0,
// else H[q * Fp + f0]): P = bias + ac, then bin q (input phase Tw + 2 + q) joins before output phase q + 2, as in
// fire_row (k0 = Tw + 1 whenever there are late bins).
template <int NL>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline))
static inline void fire16(__m512 ac, const __m512* h, const float* H, int64_t Fp, int nl, int64_t m, int64_t F,
                          int64_t f0, __mmask16 tail, const FireArgs& a) {
  const __m512 inv = _mm512_loadu_ps(a.inv + f0);
  __m512 P = _mm512_add_ps(a.bias ? _mm512_loadu_ps(a.bias + f0) : _mm512_setzero_ps(), ac);
  __m512i ph = _mm512_setzero_si512(), sg = _mm512_setzero_si512();
  __mmask16 left = tail;
  check16(P, inv, 1, a, left, ph, sg);
  const int n = NL >= 0 ? NL : nl;
  for (int q = 0; q < n && q + 2 <= a.T && left; ++q) {
    P = _mm512_add_ps(P, NL >= 0 ? h[q] : _mm512_load_ps(H + q * Fp + f0));
    check16(P, inv, q + 2, a, left, ph, sg);
  }
  for (int64_t t = n + 2; t <= a.T && left; ++t) check16(P, inv, t, a, left, ph, sg);
  _mm512_mask_cvtepi32_storeu_epi8(a.out_phase + m * F + f0, tail, ph);
  if (a.out_sign) _mm512_mask_cvtepi32_storeu_epi8(a.out_sign + m * F + f0, tail, sg);
}

// One output phase t of 8 neurons (check16 on AVX2: lane masks are all-ones floats).
__attribute__((target("avx2"), always_inline))
static inline void check8(__m256 P, __m256 inv, int64_t t, const FireArgs& a, __m256& left, __m256i& ph,
                          __m256i& sg) {
  const __m256 v = _mm256_mul_ps(P, inv);
  const __m256 mag = a.is_signed ? _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))) : v;
  const __m256 now = _mm256_and_ps(left, _mm256_cmp_ps(mag, _mm256_set1_ps(a.thr[t - 1]), _CMP_GE_OQ));
  ph = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(ph), _mm256_castsi256_ps(_mm256_set1_epi32((int)t)),
                                            now));
  if (a.is_signed) {
    const __m256i pos = _mm256_castps_si256(_mm256_and_ps(now, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ)));
    const __m256i neg = _mm256_castps_si256(_mm256_and_ps(now, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ)));
    sg = _mm256_or_si256(_mm256_andnot_si256(_mm256_or_si256(pos, neg), sg),
                         _mm256_or_si256(_mm256_and_si256(pos, _mm256_set1_epi32(1)), neg));  // neg lanes: -1
  }
  left = _mm256_andnot_ps(now, left);
}

// fire16 on AVX2: 8 features, the n = F - f0 (< 8 in the last block) real ones written.
template <int NL>
__attribute__((target("avx2"), always_inline))
static inline void fire8(__m256 ac, const __m256* h, const float* H, int64_t Fp, int nl, int64_t m, int64_t F,
                         int64_t f0, const FireArgs& a) {
  const int64_t n = std::min<int64_t>(F - f0, 8);
  const __m256 inv = _mm256_loadu_ps(a.inv + f0);
  __m256 P = _mm256_add_ps(a.bias ? _mm256_loadu_ps(a.bias + f0) : _mm256_setzero_ps(), ac);
  __m256i ph = _mm256_setzero_si256(), sg = _mm256_setzero_si256();
  __m256 left = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  check8(P, inv, 1, a, left, ph, sg);
  const int nb = NL >= 0 ? NL : nl;
  for (int q = 0; q < nb && q + 2 <= a.T && _mm256_movemask_ps(left); ++q) {
    P = _mm256_add_ps(P, NL >= 0 ? h[q] : _mm256_load_ps(H + q * Fp + f0));
    check8(P, inv, q + 2, a, left, ph, sg);
  }
  for (int64_t t = nb + 2; t <= a.T && _mm256_movemask_ps(left); ++t) check8(P, inv, t, a, left, ph, sg);
  alignas(32) int32_t p32[8], s32[8];
  _mm256_store_si256((__m256i*)p32, ph);
  _mm256_store_si256((__m256i*)s32, sg);
  for (int64_t i = 0; i < n; ++i) {
    a.out_phase[m * F + f0 + i] = (int8_t)p32[i];
    if (a.out_sign) a.out_sign[m * F + f0 + i] = (int8_t)s32[i];
  }
}
