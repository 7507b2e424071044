// Exact-mode one-spike convolution layers with a wait Tw < T: the fused kernel of the graph path applied to
// im2col rows (see spikegcn/kernels/conv_cpu.py).
//
// Output row m is one output position (n, oy, ox) with its C output channels: its early potentials are read from
// the NCHW tensor `first` and its phases written to an NCHW output (no transposed copies). Its early potential
// (bias + the dense convolution of every input spike that arrived before output phase 1) comes in `first`. The late
// spikes (virtual phase r > k0) are listed per input position; for each kernel offset the row reads the late spikes
// at the input position under it and adds value x weight[ky][kx][c][:] (a C-wide axpy) into the bin of their phase.
// The neurons then add the bins phase by phase and fire at the first threshold crossing (the rule of
// spikegcn.neuron.one_spike_fire with wait max_d over T_v virtual phases), the C channels of a tile of rows in
// lockstep. Cost: the dense convolution plus late spikes x fan-out.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace {

struct ConvInput {  // one synaptic input of the layer, as a convolution
  const int64_t* ptr;  // [N * H * W + 1] late spikes of input position p: ptr[p] .. ptr[p + 1]
  const int32_t* ch;   // input channel of each late spike
  const int16_t* bin;  // virtual fire phase of each late spike (k0 < bin <= T_v)
  const void* val;     // normalised value of each late spike
  const void* w;       // [kh, kw, Cin, C] weights
  int64_t H, W, Cin, kh, kw, sh, sw, ph, pw, dh, dw;
};

struct Layer {  // what every output row needs
  const ConvInput* ins;
  int64_t n_in, Ho, Wo, C, T, k0, T_v, max_d;
  const void* div;  // [C] divisor of each bin (the graph engine's lambda: bins in ANN units), or nullptr
  bool is_signed;   // signed neurons: fire on |potential|, sign written to sg
};

// p += bin (or bin / div, channel by channel)
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void add_bin(const Layer& L, const scalar_t* __restrict b,
                                                   const scalar_t* __restrict dv, scalar_t* __restrict p) {
  const int64_t C = CC > 0 ? CC : L.C;
  if (dv != nullptr) {
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) p[k] += b[k] / dv[k];
  } else {
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) p[k] += b[k];
  }
}

// The late contributions of output row m into its phase bins (bins[(r - k0 - 1) * C + k]).
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void late_bins(const Layer& L, int64_t m, scalar_t* __restrict bins) {
  const int64_t C = CC > 0 ? CC : L.C, k0 = L.k0, n = m / (L.Ho * L.Wo), oy = (m / L.Wo) % L.Ho, ox = m % L.Wo;
  const int64_t nbc = (L.T_v - k0) * C;
  for (int64_t q = 0; q < nbc; ++q) bins[q] = scalar_t(0);
  for (int64_t i = 0; i < L.n_in; ++i) {
    const ConvInput& in = L.ins[i];
    const scalar_t* val = static_cast<const scalar_t*>(in.val);
    const scalar_t* w = static_cast<const scalar_t*>(in.w);
    for (int64_t ky = 0; ky < in.kh; ++ky) {
      const int64_t y = oy * in.sh - in.ph + ky * in.dh;
      if (y < 0 || y >= in.H) continue;
      for (int64_t kx = 0; kx < in.kw; ++kx) {
        const int64_t x = ox * in.sw - in.pw + kx * in.dw;
        if (x < 0 || x >= in.W) continue;
        const int64_t pos = (n * in.H + y) * in.W + x;
        const scalar_t* wk = w + (ky * in.kw + kx) * in.Cin * C;
        for (int64_t j = in.ptr[pos]; j < in.ptr[pos + 1]; ++j) {
          const scalar_t v = val[j];
          const scalar_t* __restrict wr = wk + (int64_t)in.ch[j] * C;
          scalar_t* __restrict h = bins + (int64_t)(in.bin[j] - k0 - 1) * C;
#pragma omp simd
          for (int64_t k = 0; k < C; ++k) h[k] += wr[k] * v;
        }
      }
    }
  }
}

// The C neurons of each of the R rows of a tile from their early potentials P ([R, C], then the final potentials):
// add each row's bins (BINS [R, T_v - k0, C]) phase by phase and fire at the first threshold crossing (signed
// neurons on |potential|). FZ gets the fire phases, negative for a signed neuron firing on a negative potential, 0
// for none. Every phase's test runs over the whole tile, R x C independent lanes: a row alone would be one short
// chain of dependent vector ops per phase. The "not fired yet" and threshold tests are combined with a
// non-short-circuit &, so that the potential's load does not depend on the first. Each neuron sees the same
// additions in the same order as it would alone. Returns how many final |potential|s exceed 1.
template <typename scalar_t, int CC, bool SIGNED>
__attribute__((always_inline)) inline int64_t neurons(const Layer& L, int64_t R, const scalar_t* __restrict BINS,
                                                      const scalar_t* __restrict dv, const scalar_t* __restrict thr,
                                                      scalar_t* __restrict P, int32_t* __restrict FZ) {
  const int64_t C = CC > 0 ? CC : L.C, k0 = L.k0, nbc = (L.T_v - k0) * C, RC = R * C;
  for (int64_t i = 0; i < RC; ++i) FZ[i] = 0;
  int64_t r = k0;  // virtual phases added so far
  for (int64_t t = 1; t <= L.T; ++t) {
    for (const int64_t upto = std::min(t + L.max_d, L.T_v); r < upto; ++r)
      for (int64_t m = 0; m < R; ++m) add_bin<scalar_t, CC>(L, BINS + m * nbc + (r - k0) * C, dv, P + m * C);
    const scalar_t th = thr[t - 1];
    const int32_t tt = (int32_t)t;
    if (SIGNED) {
#pragma omp simd
      for (int64_t i = 0; i < RC; ++i)
        FZ[i] = ((FZ[i] == 0) & (std::abs(P[i]) >= th)) ? (P[i] > scalar_t(0) ? tt : -tt) : FZ[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < RC; ++i) FZ[i] = ((FZ[i] == 0) & (P[i] >= th)) ? tt : FZ[i];
    }
  }
  // P is now the final potential: input phases past T + max_d reach no output phase (the phase-by-phase path stops
  // there too), so the bins after them are not added
  int64_t nsat = 0;
#pragma omp simd reduction(+ : nsat)
  for (int64_t i = 0; i < RC; ++i) nsat += (SIGNED ? std::abs(P[i]) : P[i]) > scalar_t(1);
  return nsat;
}

// A tile of R consecutive output rows m0 .. m0 + R - 1, positions of one sample (or with HWo = 1 R samples):
// `first` and `out` are NCHW, so channel k of the tile is R contiguous elements at base + k * HWo (or, HWo = 1,
// a row's C channels are contiguous). The tile is gathered into P (row-major [R, C]) and scattered back from FZ
// with contiguous accesses: one row at a time would touch C elements HWo apart, which for HWo a multiple of 1024
// floats all fall into one L1 set and evict each other. Adds to *sat / *bad.
// CC > 0: the channel count as a compile-time constant (16, 32, 64, 128, 256: loops unrolled, no remainders);
// 0: L.C.
constexpr int64_t TILE_LANES = 256;  // R x C: 16 AVX-512 vectors of float per phase test (bins 1 KiB/phase)
constexpr int64_t TILE_ROWS = 16;

template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void tile_body(const Layer& L, int64_t m0, int64_t R, const scalar_t* first,
                                                     const scalar_t* thr, scalar_t* __restrict BINS,
                                                     scalar_t* __restrict P, int32_t* __restrict FZ, int8_t* out,
                                                     int8_t* sg, int64_t* sat, int64_t* bad) {
  const int64_t C = CC > 0 ? CC : L.C, HWo = L.Ho * L.Wo, nbc = (L.T_v - L.k0) * C;
  // element (r, k) at base + k * HWo + r (positions of one sample) or base + r * C + k (HWo = 1)
  const int64_t base = (m0 / HWo) * C * HWo + m0 % HWo, ks = HWo == 1 ? 1 : HWo, rs = HWo == 1 ? C : 1;
  int64_t nbad = 0;
  for (int64_t k = 0; k < C; ++k) {
    for (int64_t r = 0; r < R; ++r) {
      const scalar_t f = first[base + k * ks + r * rs];
      P[r * C + k] = f;
      nbad += !(f - f == scalar_t(0));  // NaN or inf
    }
  }
  for (int64_t r = 0; r < R; ++r) late_bins<scalar_t, CC>(L, m0 + r, BINS + r * nbc);
  const scalar_t* __restrict dv = static_cast<const scalar_t*>(L.div);
  *sat += L.is_signed ? neurons<scalar_t, CC, true>(L, R, BINS, dv, thr, P, FZ)
                      : neurons<scalar_t, CC, false>(L, R, BINS, dv, thr, P, FZ);
  for (int64_t k = 0; k < C; ++k) {
    for (int64_t r = 0; r < R; ++r) {
      const int32_t f = FZ[r * C + k];
      const int64_t e = base + k * ks + r * rs;
      out[e] = (int8_t)std::abs(f);
      if (L.is_signed) sg[e] = f > 0 ? int8_t(1) : f < 0 ? int8_t(-1) : int8_t(0);
    }
  }
  *bad += nbad;
}

template <typename scalar_t>
using TileFn = void (*)(const Layer&, int64_t, int64_t, const scalar_t*, const scalar_t*, scalar_t*, scalar_t*,
                       int32_t*, int8_t*, int8_t*, int64_t*, int64_t*);

#define SPIKEGCN_TILE_ARGS                                                                                           \
  const Layer &L, int64_t m0, int64_t R, const scalar_t *first, const scalar_t *thr, scalar_t *bins, scalar_t *P,   \
      int32_t *FZ, int8_t *out, int8_t *sg, int64_t *sat, int64_t *bad
#define SPIKEGCN_TILE_CALL tile_body<scalar_t, CC>(L, m0, R, first, thr, bins, P, FZ, out, sg, sat, bad)

template <typename scalar_t, int CC>
void tile_portable(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPIKEGCN_CONV_X86 1
// The same code compiled for wider vectors (no FMA: -ffp-contract=off keeps products and sums separate).
template <typename scalar_t, int CC>
__attribute__((target("avx2"))) void tile_avx2(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL;
}

template <typename scalar_t, int CC>
__attribute__((target("avx512f"))) void tile_avx512(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL;
}
#endif

template <typename scalar_t, int CC>
TileFn<scalar_t> pick_isa(int64_t isa) {
#ifdef SPIKEGCN_CONV_X86
  if (isa >= 2 && __builtin_cpu_supports("avx512f")) return tile_avx512<scalar_t, CC>;
  if (isa >= 1 && __builtin_cpu_supports("avx2")) return tile_avx2<scalar_t, CC>;
#endif
  return tile_portable<scalar_t, CC>;
}

template <typename scalar_t>
TileFn<scalar_t> pick_tile(int64_t isa, int64_t C) {
  switch (C) {
    case 16: return pick_isa<scalar_t, 16>(isa);
    case 32: return pick_isa<scalar_t, 32>(isa);
    case 64: return pick_isa<scalar_t, 64>(isa);
    case 128: return pick_isa<scalar_t, 128>(isa);
    case 256: return pick_isa<scalar_t, 256>(isa);
    default: return pick_isa<scalar_t, 0>(isa);
  }
}

template <typename scalar_t>
void run(const scalar_t* first, const std::vector<ConvInput>& ins, int64_t N, int64_t Ho, int64_t Wo, int64_t C,
         const scalar_t* thr, int64_t T, int64_t k0, int64_t T_v, int64_t max_d, const scalar_t* div, bool is_signed,
         int64_t isa, int8_t* out, int8_t* sg, int64_t* sat_out, int64_t* bad_out) {
  const Layer L{ins.data(), (int64_t)ins.size(), Ho, Wo, C, T, k0, T_v, max_d, div, is_signed};
  // rows per tile; tiles per sample (HWo = 1: the samples are the rows, one "sample" of N rows)
  const int64_t tr = std::max<int64_t>(1, std::min<int64_t>(TILE_ROWS, TILE_LANES / std::max<int64_t>(C, 1)));
  const int64_t HWo = Ho * Wo, span = HWo == 1 ? N : HWo, n_spans = HWo == 1 ? 1 : N, per = (span + tr - 1) / tr;
  const int64_t chunk = std::max<int64_t>(1, 64 / tr);  // about 64 rows per scheduled chunk
  const TileFn<scalar_t> row = pick_tile<scalar_t>(isa, C);
  int64_t sat = 0, bad = 0;
#pragma omp parallel reduction(+ : sat, bad)
  {
    std::vector<scalar_t> bins(tr * std::max<int64_t>(T_v - k0, 1) * C + 16), P(tr * C + 16);
    std::vector<int32_t> FZ(tr * C + 16);
#pragma omp for schedule(dynamic, chunk)
    for (int64_t b = 0; b < n_spans * per; ++b) {
      const int64_t q0 = (b % per) * tr;
      row(L, (b / per) * span + q0, std::min(tr, span - q0), first, thr, bins.data(), P.data(), FZ.data(), out, sg,
          &sat, &bad);
    }
  }
  *sat_out = sat;
  *bad_out = bad;
}

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
      return (int32_t)__builtin_popcountll((unsigned long long)((int64_t)v & mask)); }, ptr.data_ptr<int64_t>());
    ch = torch::empty({L}, torch::kInt32);
    bin = torch::empty({L}, torch::kInt16);
    val = torch::empty({L}, like.options());
    const int8_t* sg = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "late_list_bits_values", [&] {
      auto emit = [T, lo, offset, mask](index_t v, scalar_t s, int32_t c, int64_t& j, int64_t, int32_t* ch,
                                        int16_t* bin, scalar_t* val) {
        const int64_t m = (int64_t)v & mask;
        if (!m) return;
        for (int64_t p = lo + 1; p <= T; ++p) {
          if ((m >> (T - p)) & 1) {
            ch[j] = c;
            bin[j] = (int16_t)(p + offset);
            val[j] = (scalar_t)std::ldexp(1.0, (int)-p) * s;
            ++j;
          }
        }
      };
      fill_lists<scalar_t>(b, sg, N, C, HW, ptr.data_ptr<int64_t>(), emit, ch.data_ptr<int32_t>(),
                           bin.data_ptr<int16_t>(), val.data_ptr<scalar_t>());
    });
  });
  return {ptr, ch, bin, val};
}


// first: [N, C, Ho, Wo] early potentials; per input i: late_ptr[i], late_ch[i], late_bin[i], late_val[i],
// weight[i] ([kh, kw, Cin, C]) and geom[8 i .. 8 i + 7] = H, W, stride (2), padding (2), dilation (2).
// div: [C] divisor of every bin (the graph engine keeps bins in ANN units and divides by lambda as its event path
// does), or an empty tensor. is_signed: signed neurons (fire on |potential|). isa: 2 AVX-512, 1 AVX2, 0 portable
// (capped by what the CPU has). Returns the fire phases [N, C, Ho, Wo] (int8), their signs (int8, empty unless
// is_signed), the number of neurons whose final |potential| exceeds 1 and the number of non-finite early potentials.
std::vector<torch::Tensor> conv_exact(torch::Tensor first, std::vector<torch::Tensor> late_ptr,
                                      std::vector<torch::Tensor> late_ch, std::vector<torch::Tensor> late_bin,
                                      std::vector<torch::Tensor> late_val, std::vector<torch::Tensor> weight,
                                      std::vector<int64_t> geom, torch::Tensor thr, int64_t k0, int64_t T_v,
                                      int64_t max_d, torch::Tensor div, bool is_signed, int64_t isa) {
  TORCH_CHECK(first.dim() == 4 && first.is_contiguous(), "conv_exact: first must be a contiguous [N, C, Ho, Wo]");
  const int64_t N = first.size(0), C = first.size(1), Ho = first.size(2), Wo = first.size(3), T = thr.numel();
  const size_t n_in = weight.size();
  TORCH_CHECK(late_ptr.size() == n_in && late_ch.size() == n_in && late_bin.size() == n_in &&
                  late_val.size() == n_in && geom.size() == 8 * n_in,
              "conv_exact: one late list, weight and geometry per input");
  TORCH_CHECK(T <= 127 && k0 >= 0 && T_v > k0 && max_d >= 0, "conv_exact: bad phase arguments");
  TORCH_CHECK(thr.scalar_type() == first.scalar_type() && thr.is_contiguous(),
              "conv_exact: thresholds and potentials differ in dtype");
  std::vector<ConvInput> ins;
  for (size_t i = 0; i < n_in; ++i) {
    const auto& w = weight[i];
    TORCH_CHECK(w.dim() == 4 && w.size(3) == C && w.is_contiguous() && w.scalar_type() == first.scalar_type(),
                "conv_exact: weight ", i, " must be a contiguous [kh, kw, Cin, C] of the potentials' dtype");
    const int64_t* g = geom.data() + 8 * i;
    TORCH_CHECK(late_ptr[i].numel() == N * g[0] * g[1] + 1 && late_ptr[i].scalar_type() == torch::kInt64,
                "conv_exact: late_ptr ", i, " must hold N * H * W + 1 int64 offsets");
    const int64_t L = late_val[i].numel();
    TORCH_CHECK(late_ch[i].numel() == L && late_bin[i].numel() == L && late_ch[i].scalar_type() == torch::kInt32 &&
                    late_bin[i].scalar_type() == torch::kInt16 && late_val[i].scalar_type() == first.scalar_type(),
                "conv_exact: late spike lists ", i, " disagree in length or dtype");
    ins.push_back(ConvInput{late_ptr[i].data_ptr<int64_t>(), late_ch[i].data_ptr<int32_t>(),
                            late_bin[i].data_ptr<int16_t>(), late_val[i].data_ptr(), w.data_ptr(), g[0], g[1],
                            w.size(2), w.size(0), w.size(1), g[2], g[3], g[4], g[5], g[6], g[7]});
  }
  const bool has_div = div.numel() > 0;
  TORCH_CHECK(!has_div || (div.numel() == C && div.is_contiguous() && div.scalar_type() == first.scalar_type()),
              "conv_exact: div must be a contiguous [C] of the potentials' dtype, or empty");
  auto out = torch::zeros({N, C, Ho, Wo}, torch::kInt8);
  auto sg = is_signed ? torch::zeros({N, C, Ho, Wo}, torch::kInt8) : torch::empty({0}, torch::kInt8);
  int64_t sat = 0, bad = 0;
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "conv_exact", [&] {
    run<scalar_t>(first.data_ptr<scalar_t>(), ins, N, Ho, Wo, C, thr.data_ptr<scalar_t>(), T, k0, T_v, max_d,
                  has_div ? div.data_ptr<scalar_t>() : nullptr, is_signed, isa, out.data_ptr<int8_t>(),
                  is_signed ? sg.data_ptr<int8_t>() : nullptr, &sat, &bad);
  });
  return {out, sg, torch::tensor(sat), torch::tensor(bad)};
}

void register_conv_exact(pybind11::module_& m) {
  m.def("conv_exact", &conv_exact, "exact-mode one-spike convolution layer, late spikes on im2col rows");
  m.def("late_list", &late_list, "late spikes of int8 one-spike inputs as per-position lists");
  m.def("late_list_bits", &late_list_bits, "late spikes of binary multi-spike inputs as per-position lists");
}
