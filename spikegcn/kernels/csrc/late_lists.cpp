// The late spikes of a layer's inputs as per-input-position lists, for the exact-mode kernel of conv_exact.cpp (see
// spikegcn/kernels/conv_cpu.py): for int8 one-spike inputs and binary multi-spike inputs, each spike with its
// channel, virtual phase and value, in the order position, channel, phase. Part of the module built from
// fused_cpu.cpp (registered there).
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "position_counts.h"  // bit_count

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPIKEGCN_CONV_X86 1
#endif

namespace {

// Per-position list offsets: ptr[1 + n * HW + q] = number of late spikes at position q of sample n, summed over
// channels row by row (contiguous, vectorised), then a prefix sum.
template <typename elem_t, typename IsLate>
int64_t count_late(const elem_t* data, int64_t N, int64_t C, int64_t HW, IsLate is_late, int64_t* pt) {
#pragma omp parallel
  {
    std::vector<int32_t> cnt(HW);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      std::fill(cnt.begin(), cnt.end(), 0);
      for (int64_t c = 0; c < C; ++c) {
        const elem_t* row = data + (n * C + c) * HW;
        for (int64_t q = 0; q < HW; ++q) cnt[q] += is_late(row[q]);
      }
      for (int64_t q = 0; q < HW; ++q) pt[1 + n * HW + q] = cnt[q];
    }
  }
  for (int64_t q = 0; q < N * HW; ++q) pt[q + 1] += pt[q];
  return pt[N * HW];
}

// Fill the lists in the order position, channel, phase (what the torch path produces): position by position,
// reading its C channels (stride P, the same cache lines for neighbouring positions) and appending sequentially.
template <typename scalar_t, typename elem_t, typename Emit>
void fill_lists(const elem_t* data, const int8_t* sign, int64_t N, int64_t C, int64_t HW, const int64_t* ptr,
                Emit emit, int32_t* ch, int16_t* bin, scalar_t* val) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t q = 0; q < HW; ++q) {
      int64_t j = ptr[n * HW + q];
      const int64_t end = ptr[n * HW + q + 1];
      for (int64_t c = 0; c < C; ++c) {
        const int64_t r = (n * C + c) * HW + q;
        emit(data[r], sign ? (scalar_t)sign[r] : scalar_t(1), (int32_t)c, j, end, ch, bin, val);
      }
    }
  }
}

// Bit b of the mask: x[b] > lo, for the n <= 64 int8 elements at x. The vector variants compare 64 (32) bytes at
// once; the positions of the late spikes then come from the set bits, so that the fill costs per late spike and
// not per element.
using LateMaskFn = uint64_t (*)(const int8_t*, int64_t, int8_t);
uint64_t late_mask_base(const int8_t* x, int64_t n, int8_t lo) {
  uint64_t m = 0;
  for (int64_t b = 0; b < n; ++b) m |= (uint64_t)(x[b] > lo) << b;
  return m;
}
#ifdef SPIKEGCN_CONV_X86
__attribute__((target("avx2"))) uint64_t late_mask_256(const int8_t* x, int64_t n, int8_t lo) {
  if (n < 64) return late_mask_base(x, n, lo);
  const __m256i l = _mm256_set1_epi8(lo);
  const uint32_t a = (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i*)x), l));
  const uint32_t b =
      (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i*)(x + 32)), l));
  return (uint64_t)a | ((uint64_t)b << 32);
}
__attribute__((target("avx512f,avx512bw"))) uint64_t late_mask_512(const int8_t* x, int64_t n, int8_t lo) {
  const __mmask64 in = n >= 64 ? ~__mmask64(0) : ((__mmask64(1) << n) - 1);
  return _mm512_mask_cmpgt_epi8_mask(in, _mm512_maskz_loadu_epi8(in, x), _mm512_set1_epi8(lo));
}
#endif

LateMaskFn pick_late_mask(int64_t isa) {
#ifdef SPIKEGCN_CONV_X86
  if (isa >= 2 && __builtin_cpu_supports("avx512bw")) return late_mask_512;
  if (isa >= 1 && __builtin_cpu_supports("avx2")) return late_mask_256;
#endif
  return late_mask_base;
}

// The late lists of int8 spikes [N, C, HW] in the order position, channel: each run of up to 64 contiguous elements
// (a channel's positions, or with HW = 1 a position's channels) is compared at once and its late spikes appended at
// their position's cursor (positions in the outer loop of the HW = 1 layout, channels in the other: either way a
// position's spikes come in channel order). Returns how many late phases lie past the value table (nt entries):
// their index is clamped meanwhile, and the caller refuses the lists.
template <typename scalar_t>
int64_t fill_late(const int8_t* ph, const int8_t* sg, int64_t N, int64_t C, int64_t HW, int8_t lo, int64_t offset,
                  const scalar_t* tb, int64_t nt, LateMaskFn mask, const int64_t* ptr, int32_t* ch, int16_t* bin,
                  scalar_t* val) {
  const int64_t run = HW == 1 ? C : HW;  // contiguous elements of one position (HW = 1) or one channel
  int64_t bad = 0;
#pragma omp parallel reduction(+ : bad)
  {
    std::vector<int64_t> cur(HW);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t q = 0; q < HW; ++q) cur[q] = ptr[n * HW + q];
      for (int64_t c = 0; c < (HW == 1 ? 1 : C); ++c) {
        const int64_t r0 = (n * C + c) * HW;  // first element of the run
        for (int64_t e0 = 0; e0 < run; e0 += 64) {
          for (uint64_t m = mask(ph + r0 + e0, std::min<int64_t>(64, run - e0), lo); m; m &= m - 1) {
            const int64_t e = e0 + __builtin_ctzll(m), r = r0 + e;
            const int64_t j = cur[HW == 1 ? 0 : e]++;
            ch[j] = (int32_t)(HW == 1 ? e : c);
            bin[j] = (int16_t)(ph[r] + offset);
            const uint8_t u = (uint8_t)ph[r];  // a negative phase reads as >= 128
            bad += u >= nt;
            val[j] = tb[u < nt ? u : 0] * (sg ? (scalar_t)sg[r] : scalar_t(1));
          }
        }
      }
    }
  }
  return bad;
}

}  // namespace

static void check_lists_input(const torch::Tensor& data, const torch::Tensor& sign, const char* what) {
  TORCH_CHECK(data.dim() == 3 && data.is_contiguous(), what, ": spikes must be a contiguous [N, C, positions]");
  TORCH_CHECK(sign.numel() == 0 || (sign.sizes() == data.sizes() && sign.is_contiguous() &&
                                    sign.scalar_type() == torch::kInt8),
              what, ": sign must be empty or an int8 tensor shaped like the spikes");
}

// The late spikes (fire phase > lo) of one-spike inputs `phase` [N, C, P] (int8, NCHW with the positions
// flattened; `sign` the same or empty) as per-position lists: ptr [N P + 1], channel, virtual phase
// (phase + offset) and value table[phase] (x sign).
std::vector<torch::Tensor> late_list(torch::Tensor phase, torch::Tensor sign, torch::Tensor table, int64_t lo,
                                     int64_t offset, int64_t isa) {
  check_lists_input(phase, sign, "late_list");
  TORCH_CHECK(phase.scalar_type() == torch::kInt8, "late_list: phases must be int8");
  TORCH_CHECK(table.dim() == 1 && table.is_contiguous(), "late_list: table must be a contiguous vector");
  const int64_t N = phase.size(0), C = phase.size(1), HW = phase.size(2);
  const int8_t* ph = phase.data_ptr<int8_t>();
  const int8_t lo8 = (int8_t)std::max<int64_t>(-128, std::min<int64_t>(lo, 127));  // int8 phases: > 127 is none
  auto ptr = torch::zeros({N * HW + 1}, torch::kInt64);
  const int64_t L = count_late(ph, N, C, HW, [lo8](int8_t p) { return (int32_t)(p > lo8); }, ptr.data_ptr<int64_t>());
  auto ch = torch::empty({L}, torch::kInt32);
  auto bin = torch::empty({L}, torch::kInt16);
  auto val = torch::empty({L}, table.options());
  const int8_t* sg = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  int64_t bad = 0;
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "late_list", [&] {
    bad = fill_late<scalar_t>(ph, sg, N, C, HW, lo8, offset, table.data_ptr<scalar_t>(), table.numel(),
                              pick_late_mask(isa), ptr.data_ptr<int64_t>(), ch.data_ptr<int32_t>(),
                              bin.data_ptr<int16_t>(), val.data_ptr<scalar_t>());
  });
  TORCH_CHECK(bad == 0, "late_list: ", bad, " late fire phase(s) outside 0..", table.numel() - 1,
              " (the value table); phases must come from the encoder with the same code");
  return {ptr, ch, bin, val};
}

// The late spikes of binary multi-spike inputs: `bits` [N, C, P] (int32 or int64 T-bit codes; phase t is bit
// T - t), every bit of a phase p > lo a spike worth 2^-p (x sign), listed per position in the order channel, phase.
std::vector<torch::Tensor> late_list_bits(torch::Tensor bits, torch::Tensor sign, int64_t T, int64_t lo,
                                          int64_t offset, torch::Tensor like) {
  check_lists_input(bits, sign, "late_list_bits");
  TORCH_CHECK(bits.scalar_type() == torch::kInt32 || bits.scalar_type() == torch::kInt64,
              "late_list_bits: codes must be int32 or int64");
  TORCH_CHECK(T >= 1 && T <= 62 && lo >= 0 && lo < T, "late_list_bits: need 0 <= lo < T <= 62");
  const int64_t N = bits.size(0), C = bits.size(1), HW = bits.size(2);
  const int64_t mask = (int64_t(1) << (T - lo)) - 1;  // the bits of phases lo + 1 .. T
  auto ptr = torch::zeros({N * HW + 1}, torch::kInt64);
  auto ch = torch::Tensor(), bin = torch::Tensor(), val = torch::Tensor();
  AT_DISPATCH_INDEX_TYPES(bits.scalar_type(), "late_list_bits", [&] {
    const index_t* b = bits.data_ptr<index_t>();
    const int64_t L = count_late(b, N, C, HW, [mask](index_t v) {
      return bit_count((uint64_t)((int64_t)v & mask)); }, ptr.data_ptr<int64_t>());
    ch = torch::empty({L}, torch::kInt32);
    bin = torch::empty({L}, torch::kInt16);
    val = torch::empty({L}, like.options());
    const int8_t* sg = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "late_list_bits_values", [&] {
      std::vector<scalar_t> pw(T + 1);  // 2^-p, exact
      for (int64_t p = 0; p <= T; ++p) pw[p] = (scalar_t)std::ldexp(1.0, (int)-p);
      // the set bits of m from the highest (earliest phase) down: phase order, one step per spike
      auto emit = [T, offset, mask, &pw](index_t v, scalar_t s, int32_t c, int64_t& j, int64_t, int32_t* ch,
                                         int16_t* bin, scalar_t* val) {
        for (uint64_t m = (uint64_t)((int64_t)v & mask); m; m &= ~(uint64_t(1) << (63 - __builtin_clzll(m)))) {
          const int64_t p = T - (63 - __builtin_clzll(m));
          ch[j] = c;
          bin[j] = (int16_t)(p + offset);
          val[j] = pw[p] * s;
          ++j;
        }
      };
      fill_lists<scalar_t>(b, sg, N, C, HW, ptr.data_ptr<int64_t>(), emit, ch.data_ptr<int32_t>(),
                           bin.data_ptr<int16_t>(), val.data_ptr<scalar_t>());
    });
  });
  return {ptr, ch, bin, val};
}


// The input position of every late spike from the per-position offsets ptr [P + 1] (L spikes) into pos (L + 16
// entries): each thread fills its share of the positions with one 16-wide store per position (more only past 16
// spikes) instead of a loop whose exit the branch predictor misses; what a store writes past a position's spikes
// the next position overwrites (near the end of the share, an exact loop).
void spike_positions(const int64_t* ptr, int64_t P, int32_t* pos) {
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t p0 = P * t / nt, p1 = P * (t + 1) / nt, end = ptr[p1];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t a = ptr[p], b = ptr[p + 1];
      if (b + 16 <= end) {
        int64_t j = a;
        do {
#pragma omp simd
          for (int64_t k = 0; k < 16; ++k) pos[j + k] = (int32_t)p;
          j += 16;
        } while (j < b);
      } else {
        for (int64_t j = a; j < b; ++j) pos[j] = (int32_t)p;
      }
    }
  }
}

void register_late_lists(pybind11::module_& m) {
  m.def("late_list", &late_list, "late spikes of int8 one-spike inputs as per-position lists");
  m.def("late_list_bits", &late_list_bits, "late spikes of binary multi-spike inputs as per-position lists");
}
