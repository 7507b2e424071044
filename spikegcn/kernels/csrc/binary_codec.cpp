// The binary input code's compiled encoder and decoder (spikegcn.coding.encode_binary / decode_binary), and the
// per-position spike counts of spike data (one-spike phases or binary codes). Part of the module built from
// fused_cpu.cpp (registered there).
#include <torch/extension.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "huge_pages.h"       // empty_huge: large outputs on transparent huge pages
#include "position_counts.h"  // per-thread spike counts per position, bit_count, PARALLEL_MIN

// Spikes per input position, summed over R = batch x channels rows of an [R, P] tensor in one pass (per-thread
// 32-bit counters over blocks of rows, then a reduction): the non-zeros of int8 one-spike phases, or the popcount
// of int32 / int64 binary codes (one spike per set bit). A convolution's exact addition count is
// sum_p count[p] * fan_out[p].
template <typename elem_t, typename Count>
static void count_rows(const elem_t* xp, int64_t R, int64_t P, Count count, int64_t* op) {
  #pragma omp parallel if (R * P >= PARALLEL_MIN)
  {
    PositionCounts pc(op, P);
    #pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < R; ++r) {
      pc.add(xp + r * P, 0, P, count);
      pc.added(1);
    }
    pc.merge();
  }
}

torch::Tensor count_per_position(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "count_per_position: x must be a contiguous 2-D tensor");
  const int64_t R = x.size(0), P = x.size(1);
  auto out = torch::zeros({P}, torch::kInt64);
  int64_t* op = out.data_ptr<int64_t>();
  switch (x.scalar_type()) {
    case torch::kInt8:
      count_rows(x.data_ptr<int8_t>(), R, P, is_spike, op);
      break;
    case torch::kInt32:
      count_rows(x.data_ptr<int32_t>(), R, P, [](int32_t v) { return bit_count((uint32_t)v); }, op);
      break;
    case torch::kInt64:
      count_rows(x.data_ptr<int64_t>(), R, P,
                 [](int64_t v) { return bit_count((uint64_t)v); }, op);
      break;
    default:
      TORCH_CHECK(false, "count_per_position: x must be int8 phases or int32 / int64 binary codes");
  }
  return out;
}

// Binary multi-spike encoding (spikegcn.coding.encode_binary) of n float32 values: the code floor(|x| 2^T), clipped
// to top = 2^T - 1 as an integer (in double it rounds to 2^T from T = 54 on), from |x| 2^T in double as the torch
// path computes it (a float times a power of two is exact), and the sign where a bit is set; counts the
// non-finite, negative and saturated (|x| > 1) values for the caller's checks (a NaN's code is left to them).
// Branch-free per element, so that it vectorises in each clone below.
template <typename bits_t, bool SIGNED>
__attribute__((always_inline)) inline void binary_loop(const float* x, int64_t n, double scale, bits_t top,
                                                       bits_t* bits, int8_t* sg, int64_t* counts) {
  int32_t bad = 0, neg = 0, sat = 0;  // n <= 4096 per call
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i], m = std::fabs(v);
    bad += !(m <= FLT_MAX);
    neg += v < 0.f;
    sat += m > 1.f;
    const double y = (double)m * scale;
    const bits_t b = y < scale ? (bits_t)y : top;  // truncation: the floor of y >= 0
    bits[i] = b;
    if (SIGNED) sg[i] = (int8_t)((b != 0) * ((v > 0.f) - (v < 0.f)));
  }
  counts[0] += bad;
  counts[1] += neg;
  counts[2] += sat;
}

// One block of binary_loop, cloned per instruction set (rounding and the conversions vectorise from AVX2 on).
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void binary_block(const float* x, int64_t n, double scale, int64_t top, int32_t* b32, int64_t* b64, int8_t* sg,
                         int64_t* counts) {
  if (b32 && sg) binary_loop<int32_t, true>(x, n, scale, (int32_t)top, b32, sg, counts);
  else if (b32) binary_loop<int32_t, false>(x, n, scale, (int32_t)top, b32, sg, counts);
  else if (sg) binary_loop<int64_t, true>(x, n, scale, top, b64, sg, counts);
  else binary_loop<int64_t, false>(x, n, scale, top, b64, sg, counts);
}

// -> {bits (int32 for T <= 30, else int64), sign (undefined unless signed), int64 [non-finite, negative, saturated]}
std::vector<torch::Tensor> encode_binary(torch::Tensor x, int64_t T, bool is_signed) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous() && T >= 1 && T <= 62,
              "encode_binary: x must be contiguous float32 and 1 <= T <= 62");
  const bool wide = T > 30;
  auto bits = empty_huge(x.sizes(), wide ? torch::kInt64 : torch::kInt32);
  auto sign = is_signed ? torch::empty(x.sizes(), torch::kInt8) : torch::Tensor();
  const int64_t n = x.numel(), BS = 4096, nb = (n + BS - 1) / BS;
  const double scale = std::ldexp(1.0, (int)T);
  const int64_t top = (int64_t(1) << T) - 1;
  const float* xp = x.data_ptr<float>();
  int32_t* b32 = wide ? nullptr : bits.data_ptr<int32_t>();
  int64_t* b64 = wide ? bits.data_ptr<int64_t>() : nullptr;
  int8_t* sp = is_signed ? sign.data_ptr<int8_t>() : nullptr;
  int64_t bad = 0, neg = 0, sat = 0;
  #pragma omp parallel for schedule(static) reduction(+:bad, neg, sat) if (n >= PARALLEL_MIN)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * BS;
    int64_t c[3] = {0, 0, 0};
    binary_block(xp + i0, std::min(BS, n - i0), scale, top, b32 ? b32 + i0 : nullptr, b64 ? b64 + i0 : nullptr,
                 sp ? sp + i0 : nullptr, c);
    bad += c[0]; neg += c[1]; sat += c[2];
  }
  return {bits, sign, torch::tensor({bad, neg, sat}, torch::kInt64)};
}

// The normalised values of binary codes (spikegcn.coding.decode_binary to float32): (float)(bits * 2^-T) x sign,
// the torch path's double product, rounding and float product.
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void unbinary_block(const int32_t* b32, const int64_t* b64, const int8_t* sg, int64_t n, double inv,
                           float* o) {
  if (b32)
    for (int64_t i = 0; i < n; ++i) o[i] = (float)((double)b32[i] * inv);
  else
    for (int64_t i = 0; i < n; ++i) o[i] = (float)((double)b64[i] * inv);
  if (sg)
    for (int64_t i = 0; i < n; ++i) o[i] = o[i] * (float)sg[i];
}

torch::Tensor decode_binary(torch::Tensor bits, int64_t T, torch::Tensor sign) {
  const bool wide = bits.scalar_type() == torch::kInt64;
  TORCH_CHECK((wide || bits.scalar_type() == torch::kInt32) && bits.is_contiguous() && T >= 1 && T <= 62,
              "decode_binary: bits must be contiguous int32 / int64 and 1 <= T <= 62");
  TORCH_CHECK(!sign.numel() || (sign.scalar_type() == torch::kInt8 && sign.is_contiguous() &&
                                sign.numel() == bits.numel()),
              "decode_binary: sign must be contiguous int8 with one entry per code");
  auto out = empty_huge(bits.sizes(), torch::kFloat32);
  const int64_t n = bits.numel(), BS = 4096, nb = (n + BS - 1) / BS;
  const double inv = std::ldexp(1.0, -(int)T);
  const int32_t* b32 = wide ? nullptr : bits.data_ptr<int32_t>();
  const int64_t* b64 = wide ? bits.data_ptr<int64_t>() : nullptr;
  const int8_t* sp = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  float* op = out.data_ptr<float>();
  #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * BS;
    unbinary_block(b32 ? b32 + i0 : nullptr, b64 ? b64 + i0 : nullptr, sp ? sp + i0 : nullptr,
                   std::min(BS, n - i0), inv, op + i0);
  }
  return out;
}

void register_binary_codec(pybind11::module_& m) {
  m.def("encode_binary", &encode_binary,
        "binary multi-spike encoding of float32 values (+ non-finite, negative and saturated counts)");
  m.def("decode_binary", &decode_binary, "binary codes to their float32 values");
  m.def("count_per_position", &count_per_position,
        "spikes per column of an [R, P] tensor: int8 non-zeros or int32 / int64 popcounts");
}
