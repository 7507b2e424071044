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

#include "conv_tile.h"        // the layer, its inputs, a tile's early potentials and late-spike bins
#include "neuron_steps.h"     // add_bin, fire_test
#include "position_counts.h"  // per-thread spike counts per position, PARALLEL_MIN

namespace {

// A final potential past the code's range (|p| > 1: the neuron saturates at phase 1).
template <typename scalar_t, bool SIGNED>
__attribute__((always_inline)) inline bool saturates(scalar_t p) {
  return (SIGNED ? std::abs(p) : p) > scalar_t(1);
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
      for (int64_t m = 0; m < R; ++m) add_bin<scalar_t>(P + m * C, BINS + m * nbc + (r - k0) * C, dv, C);
    const scalar_t th = thr[t - 1];
    const int32_t tt = (int32_t)t;
#pragma omp simd
    for (int64_t i = 0; i < RC; ++i) FZ[i] = fire_test<scalar_t, SIGNED>(FZ[i], P[i], th, tt);
  }
  // P is now the final potential: input phases past T + max_d reach no output phase (the phase-by-phase path stops
  // there too), so the bins after them are not added
  int64_t nsat = 0;
#pragma omp simd reduction(+ : nsat)
  for (int64_t i = 0; i < RC; ++i) nsat += saturates<scalar_t, SIGNED>(P[i]);
  return nsat;
}

// neurons() for a compile-time channel count: the tile's lanes in groups of 64 (GR rows x GK channels), each
// group's potentials and fire phases held in registers through the whole phase loop (a phase costs a bin load, an
// add, a compare and a blend per vector, no reloads or stores), the groups' chains independent. The same additions
// in the same order per neuron as neurons(). Rows R .. rows - 1 of the buffers (a short last tile) are stepped too,
// on stale values, and not counted.
template <typename scalar_t, int CC, bool SIGNED>
__attribute__((always_inline)) inline int64_t neurons64(const Layer& L, int64_t R, int64_t rows,
                                                        const scalar_t* __restrict BINS,
                                                        const scalar_t* __restrict dv, const scalar_t* __restrict thr,
                                                        scalar_t* __restrict P, int32_t* __restrict FZ) {
  constexpr int64_t GK = CC >= 64 ? 64 : CC, GR = 64 / GK;
  static_assert(64 % GK == 0 && CC % GK == 0 && tile_rows(CC) % GR == 0, "neurons64: whole groups per tile");
  const int64_t k0 = L.k0, nbc = (L.T_v - k0) * CC;
  // the last phase that adds a bin (input phases past T + max_d reach no output phase)
  const int64_t t_fin = std::min<int64_t>(L.T, std::max<int64_t>(1, L.T_v - L.max_d));
  int64_t nsat = 0;
  for (int64_t row0 = 0; row0 < rows; row0 += GR) {
    for (int64_t kb = 0; kb < CC; kb += GK) {
      alignas(64) scalar_t p[64];
      alignas(64) int32_t fz[64];
      for (int64_t g = 0; g < GR; ++g)
#pragma omp simd
        for (int64_t k = 0; k < GK; ++k) {
          p[g * GK + k] = P[(row0 + g) * CC + kb + k];
          fz[g * GK + k] = 0;
        }
      int64_t r = k0;
      for (int64_t t = 1; t <= t_fin; ++t) {
        for (const int64_t upto = std::min(t + L.max_d, L.T_v); r < upto; ++r) {
          const scalar_t* b = BINS + row0 * nbc + (r - k0) * CC + kb;
          // add_bin's loop written out: calling it here (p through a restrict pointer) measured 3-6 % slower
          for (int64_t g = 0; g < GR; ++g) {
            if (dv != nullptr) {
#pragma omp simd
              for (int64_t k = 0; k < GK; ++k) p[g * GK + k] += b[g * nbc + k] / dv[kb + k];
            } else {
#pragma omp simd
              for (int64_t k = 0; k < GK; ++k) p[g * GK + k] += b[g * nbc + k];
            }
          }
        }
        const scalar_t th = thr[t - 1];
        const int32_t tt = (int32_t)t;
#pragma omp simd
        for (int64_t q = 0; q < 64; ++q) fz[q] = fire_test<scalar_t, SIGNED>(fz[q], p[q], th, tt);
      }
      // phases t_fin + 1 .. T: every bin is in, so the earliest crossing among them, scanned backwards (a compare
      // and a blend per phase), serves the lanes not fired yet
      if (t_fin < L.T) {
        alignas(64) int32_t tz[64];
        for (int64_t q = 0; q < 64; ++q) tz[q] = 0;
        for (int64_t t = L.T; t > t_fin; --t) {
          const scalar_t th = thr[t - 1];
          const int32_t tt = (int32_t)t;
#pragma omp simd
          for (int64_t q = 0; q < 64; ++q) tz[q] = tail_test<scalar_t, SIGNED>(tz[q], p[q], th, tt);
        }
#pragma omp simd
        for (int64_t q = 0; q < 64; ++q) fz[q] = fz[q] != 0 ? fz[q] : tz[q];
      }
      for (int64_t g = 0; g < GR; ++g) {
        const bool counted = row0 + g < R;
        for (int64_t k = 0; k < GK; ++k) {
          FZ[(row0 + g) * CC + kb + k] = fz[g * GK + k];
          nsat += counted & saturates<scalar_t, SIGNED>(p[g * GK + k]);
        }
      }
    }
  }
  return nsat;
}

// The tile's fire phases FZ ([R, C], row-major) into the NCHW outputs at base (element (r, k) at k * ks + r * rs:
// the magnitude into out, the sign into sg for signed neurons) and each row's fired neurons into fr. Row by row
// first: the count and the int8 magnitudes (into Z8, [R, C]) are contiguous vector work; the transposed stores then
// move bytes only, where reading FZ down a column cost a dozen scalar instructions per neuron.
template <int CC>
__attribute__((always_inline)) inline void write_phases(const Layer& L, int64_t R, const int32_t* __restrict FZ,
                                                        int8_t* out, int8_t* sg, int64_t base, int64_t ks, int64_t rs,
                                                        int32_t* __restrict fr, int8_t* __restrict Z8) {
  const int64_t C = CC > 0 ? CC : L.C;
  for (int64_t r = 0; r < R; ++r) {
    const int32_t* __restrict f = FZ + r * C;
    int8_t* __restrict z = Z8 + r * C;
    int32_t c = 0;
#pragma omp simd reduction(+ : c)
    for (int64_t k = 0; k < C; ++k) {
      c += f[k] != 0;
      z[k] = (int8_t)(f[k] < 0 ? -f[k] : f[k]);
    }
    fr[r] = c;
  }
  for (int64_t k = 0; k < C; ++k) {
    int8_t* __restrict o = out + base + k * ks;
    for (int64_t r = 0; r < R; ++r) o[r * rs] = Z8[r * C + k];
  }
  if (L.is_signed)
    for (int64_t k = 0; k < C; ++k) {
      int8_t* __restrict so = sg + base + k * ks;
      for (int64_t r = 0; r < R; ++r) {
        const int32_t f = FZ[r * C + k];
        so[r * rs] = f > 0 ? int8_t(1) : f < 0 ? int8_t(-1) : int8_t(0);
      }
    }
}

// A tile of R consecutive output rows m0 .. m0 + R - 1, positions of one sample (or with HWo = 1 R samples):
// `first` and `out` are NCHW, so channel k of the tile is R contiguous elements at base + k * HWo (or, HWo = 1,
// a row's C channels are contiguous). The tile is gathered into P (row-major [R, C]) and scattered back from FZ
// with contiguous accesses: one row at a time would touch C elements HWo apart, which for HWo a multiple of 1024
// floats all fall into one L1 set and evict each other. Adds to cnt: saturated, non-finite, fired neurons.
// CC > 0: the channel count as a compile-time constant (16, 32, 64, 128, 256: loops unrolled, no remainders);
// 0: L.C.

template <typename scalar_t, int CC, int ISA>
__attribute__((always_inline)) inline void tile_body(const Layer& L, int64_t m0, int64_t R, const scalar_t* first,
                                                     const scalar_t* thr, scalar_t* __restrict BINS,
                                                     scalar_t* __restrict P, int32_t* __restrict FZ, int8_t* out,
                                                     int8_t* sg, int64_t* cnt, int32_t* __restrict pc) {
  const int64_t C = CC > 0 ? CC : L.C, HWo = L.Ho * L.Wo, nbc = (L.T_v - L.k0) * C;
  // element (r, k) at base + k * HWo + r (positions of one sample) or base + r * C + k (HWo = 1)
  const int64_t base = (m0 / HWo) * C * HWo + m0 % HWo, ks = HWo == 1 ? 1 : HWo, rs = HWo == 1 ? C : 1;
  if (rs == 1 && m0 % HWo + 2 * R <= HWo)  // the next tile's early potentials: C streams 4 HWo bytes apart, more
    for (int64_t k = 0; k < C; ++k) __builtin_prefetch(first + base + k * ks + R);  // than the prefetcher follows
  const int64_t nbad = gather_early<scalar_t, CC>(L, R, first + base, ks, rs, P);
  late_bins<scalar_t, CC, ISA>(L, m0, R, BINS);
  const scalar_t* __restrict dv = static_cast<const scalar_t*>(L.div);
  if constexpr (CC > 0) {
    const int64_t rows = tile_rows(CC);  // the buffers' rows
    cnt[0] += L.is_signed ? neurons64<scalar_t, CC, true>(L, R, rows, BINS, dv, thr, P, FZ)
                          : neurons64<scalar_t, CC, false>(L, R, rows, BINS, dv, thr, P, FZ);
  } else {
    cnt[0] += L.is_signed ? neurons<scalar_t, CC, true>(L, R, BINS, dv, thr, P, FZ)
                          : neurons<scalar_t, CC, false>(L, R, BINS, dv, thr, P, FZ);
  }
  alignas(64) int32_t fr[TILE_ROWS];  // fired neurons per row (output position) of the tile
  // P is free now: it holds the packed phases
  write_phases<CC>(L, R, FZ, out, sg, base, ks, rs, fr, reinterpret_cast<int8_t*>(P));
  int64_t nfired = 0;
  for (int64_t r = 0; r < R; ++r) nfired += fr[r];
  if (pc != nullptr)  // the spikes per output position (maps: the tile's rows are positions m0 % HWo on)
    for (int64_t r = 0; r < R; ++r) pc[m0 % HWo + r] += fr[r];
  cnt[1] += nbad;
  cnt[2] += nfired;
}

template <typename scalar_t>
using TileFn = void (*)(const Layer&, int64_t, int64_t, const scalar_t*, const scalar_t*, scalar_t*, scalar_t*,
                       int32_t*, int8_t*, int8_t*, int64_t*, int32_t*);

#define SPIKEGCN_TILE_ARGS                                                                                           \
  const Layer &L, int64_t m0, int64_t R, const scalar_t *first, const scalar_t *thr, scalar_t *bins, scalar_t *P,   \
      int32_t *FZ, int8_t *out, int8_t *sg, int64_t *cnt, int32_t *pc
#define SPIKEGCN_TILE_CALL(ISA) tile_body<scalar_t, CC, ISA>(L, m0, R, first, thr, bins, P, FZ, out, sg, cnt, pc)

template <typename scalar_t, int CC>
void tile_portable(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL(0);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPIKEGCN_CONV_X86 1
// The same code compiled for wider vectors (no FMA: -ffp-contract=off keeps products and sums separate).
template <typename scalar_t, int CC>
__attribute__((target("avx2"))) void tile_avx2(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL(1);
}

template <typename scalar_t, int CC>
__attribute__((target("avx512f"))) void tile_avx512(SPIKEGCN_TILE_ARGS) {
  SPIKEGCN_TILE_CALL(2);
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
         const scalar_t* bias, int64_t isa, int8_t* out, int8_t* sg, int64_t* counts, int64_t* per_pos) {
  const Layer L{ins.data(), (int64_t)ins.size(), Ho, Wo, C, T, k0, T_v, max_d, div, is_signed, bias};
  // rows per tile; tiles per sample (HWo = 1: the samples are the rows, one "sample" of N rows)
  const int64_t tr = tile_rows(C);
  const int64_t HWo = Ho * Wo, span = HWo == 1 ? N : HWo, n_spans = HWo == 1 ? 1 : N, per = (span + tr - 1) / tr;
  const int64_t chunk = std::max<int64_t>(1, 64 / tr);  // about 64 rows per scheduled chunk
  const TileFn<scalar_t> row = pick_tile<scalar_t>(isa, C);
  int64_t sat = 0, bad = 0, fired = 0;
#pragma omp parallel reduction(+ : sat, bad, fired) if (N * HWo * C >= PARALLEL_MIN)
  {
    int64_t cnt[3] = {0, 0, 0};
    std::vector<scalar_t> bins(tr * std::max<int64_t>(T_v - k0, 1) * C + 16), P(tr * C + 16);
    std::vector<int32_t> FZ(tr * C + 16);
    PositionCounts pc(per_pos, HWo);  // this thread's spikes per position (per_pos nullptr: not counted)
#pragma omp for schedule(dynamic, chunk)
    for (int64_t b = 0; b < n_spans * per; ++b) {
      const int64_t q0 = (b % per) * tr;
      row(L, (b / per) * span + q0, std::min(tr, span - q0), first, thr, bins.data(), P.data(), FZ.data(), out, sg,
          cnt, pc.data());
      pc.added(C);  // a tile adds at most one per channel to a position
    }
    pc.merge();
    sat += cnt[0];
    bad += cnt[1];
    fired += cnt[2];
  }
  counts[0] = sat;
  counts[1] = bad;
  counts[2] = fired;
}

}  // namespace

void spike_positions(const int64_t* ptr, int64_t P, int32_t* pos);  // late_lists.cpp

// first: [N, C, Ho, Wo] early potentials; per input i: late_ptr[i], late_ch[i], late_bin[i], late_val[i],
// weight[i] ([kh, kw, Cin, C]) and geom[8 i .. 8 i + 7] = H, W, stride (2), padding (2), dilation (2).
// div: [C] divisor of every bin (the graph engine keeps bins in ANN units and divides by lambda as its event path
// does), or an empty tensor. bias: [C] added to `first` as it is read (non-finite sums are counted), or empty.
// is_signed: signed neurons (fire on |potential|). isa: 2 AVX-512, 1 AVX2, 0 portable
// (capped by what the CPU has). Returns the fire phases [N, C, Ho, Wo] (int8), their signs (int8, empty unless
// is_signed), the number of neurons whose final |potential| exceeds 1, the number of non-finite early potentials,
// the number of neurons that fired and, with count_positions and Ho * Wo > 1, their count per output position
// (int64 [Ho * Wo], else empty).
std::vector<torch::Tensor> conv_exact(torch::Tensor first, std::vector<torch::Tensor> late_ptr,
                                      std::vector<torch::Tensor> late_ch, std::vector<torch::Tensor> late_bin,
                                      std::vector<torch::Tensor> late_val, std::vector<torch::Tensor> weight,
                                      std::vector<int64_t> geom, torch::Tensor thr, int64_t k0, int64_t T_v,
                                      int64_t max_d, torch::Tensor div, bool is_signed, int64_t isa,
                                      bool count_positions, torch::Tensor bias) {
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
  std::vector<torch::Tensor> positions(n_in);
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
    TORCH_CHECK(N * g[0] * g[1] < (int64_t(1) << 31), "conv_exact: more than 2^31 input positions");
    const int64_t* pt = late_ptr[i].data_ptr<int64_t>();
    TORCH_CHECK(pt[0] == 0 && pt[N * g[0] * g[1]] == L, "conv_exact: late_ptr ", i, " does not span its lists");
    positions[i] = torch::empty({L + 16}, torch::kInt32);
    spike_positions(late_ptr[i].data_ptr<int64_t>(), N * g[0] * g[1], positions[i].data_ptr<int32_t>());
    ins.push_back(ConvInput{late_ptr[i].data_ptr<int64_t>(), late_ch[i].data_ptr<int32_t>(),
                            late_bin[i].data_ptr<int16_t>(), positions[i].data_ptr<int32_t>(), late_val[i].data_ptr(),
                            w.data_ptr(), g[0], g[1], w.size(2), w.size(0), w.size(1), g[2], g[3], g[4], g[5], g[6],
                            g[7]});
  }
  const bool has_div = div.numel() > 0;
  TORCH_CHECK(!has_div || (div.numel() == C && div.is_contiguous() && div.scalar_type() == first.scalar_type()),
              "conv_exact: div must be a contiguous [C] of the potentials' dtype, or empty");
  TORCH_CHECK(!bias.numel() || (bias.numel() == C && bias.is_contiguous() &&
                                 bias.scalar_type() == first.scalar_type()),
              "conv_exact: bias must be a contiguous [C] of the potentials' dtype, or empty");
  auto out = torch::empty({N, C, Ho, Wo}, torch::kInt8);  // every element written by its tile
  auto sg = is_signed ? torch::empty({N, C, Ho, Wo}, torch::kInt8) : torch::empty({0}, torch::kInt8);
  int64_t counts[3] = {0, 0, 0};
  const bool per_pos = count_positions && Ho * Wo > 1;  // [N, C] rows (Ho = Wo = 1) have no positions to count
  auto at = torch::zeros({per_pos ? Ho * Wo : 0}, torch::kInt64);
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "conv_exact", [&] {
    run<scalar_t>(first.data_ptr<scalar_t>(), ins, N, Ho, Wo, C, thr.data_ptr<scalar_t>(), T, k0, T_v, max_d,
                  has_div ? div.data_ptr<scalar_t>() : nullptr, is_signed,
                  bias.numel() ? bias.data_ptr<scalar_t>() : nullptr, isa, out.data_ptr<int8_t>(),
                  is_signed ? sg.data_ptr<int8_t>() : nullptr, counts, per_pos ? at.data_ptr<int64_t>() : nullptr);
  });
  return {out, sg, torch::tensor(counts[0]), torch::tensor(counts[1]), torch::tensor(counts[2]), at};
}

void register_conv_exact(pybind11::module_& m) {
  m.def("conv_exact", &conv_exact, "exact-mode one-spike convolution layer, late spikes on im2col rows");
}
