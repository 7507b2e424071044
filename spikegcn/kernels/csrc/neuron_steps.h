// The two steps of an exact-mode neuron that the CPU kernels share (conv_exact.cpp, dense_exact.cpp): a phase
// bin joins the potential, and the potential is tested against the phase's threshold.
#pragma once

#include <cmath>
#include <cstdint>

namespace {

// p += bin / div (the graph engine's bins in ANN units, divided by lambda as on its event path), or p += bin,
// over n lanes.
template <typename scalar_t>
__attribute__((always_inline)) inline void add_bin(scalar_t* __restrict p, const scalar_t* __restrict b,
                                                   const scalar_t* __restrict div, int64_t n) {
  if (div != nullptr) {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) p[k] += b[k] / div[k];
  } else {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) p[k] += b[k];
  }
}

// One phase's test of a neuron: not fired yet (fz == 0) and the potential p at the threshold th fires it at phase
// tt (signed neurons on |p|, negative phase for a negative p). A non-short-circuit &: the potential's load does not
// depend on the first test.
template <typename scalar_t, bool SIGNED>
__attribute__((always_inline)) inline int32_t fire_test(int32_t fz, scalar_t p, scalar_t th, int32_t tt) {
  if (SIGNED) return ((fz == 0) & (std::abs(p) >= th)) ? (p > scalar_t(0) ? tt : -tt) : fz;
  return ((fz == 0) & (p >= th)) ? tt : fz;
}

// One phase of the tail scan (phases after the last bin, the potential final), from the last phase backwards: the
// earliest phase tt whose threshold th the potential reaches (signed neurons on |p|, negative for a negative p), or
// tz. Scanned from the last phase to the first, the lanes need no "not fired yet" test.
template <typename scalar_t, bool SIGNED>
__attribute__((always_inline)) inline int32_t tail_test(int32_t tz, scalar_t p, scalar_t th, int32_t tt) {
  if (SIGNED) return std::abs(p) >= th ? (p > scalar_t(0) ? tt : -tt) : tz;
  return p >= th ? tt : tz;
}

}  // namespace
