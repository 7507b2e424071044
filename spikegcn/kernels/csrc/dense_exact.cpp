// Exact-mode one-spike dense layers (y = x W^T per row) with a wait Tw < T: conv_exact's rule for a 1 x 1
// convolution of a 1 x 1 map, with the phase bins in registers instead of memory (see
// spikegcn/kernels/conv_cpu.py).
//
// Row m (one node, or one sample) has its early potentials in `first` and its late spikes (virtual phase b > k0)
// in one run of the lists, in channel order. The row's spikes are bucketed by phase once (a stable counting sort,
// so a bucket keeps channel order); then, for each block of 64 output channels, the neurons' potentials stay in
// registers while the phases pass: phase r's bucket is summed into a zeroed accumulator (value x weight row,
// channel order), divided by lambda where the bins are in ANN units, added to the potential, and the neurons
// test their threshold. These are conv_exact's additions in conv_exact's order (a bin there is a zeroed buffer that
// the same spikes reach in the same order), so the spikes are the same bit for bit; what changes is that no bin
// is stored, zeroed or read back, and that a late spike reads one weight row from cache per block.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "neuron_steps.h"     // add_bin, fire_test
#include "position_counts.h"  // PARALLEL_MIN

namespace {

constexpr int64_t LANES = 64;  // output channels per block: 4 AVX-512 vectors of float

struct DenseLayer {
  const int64_t* ptr;  // [N + 1] offsets of each row's late spikes
  const int32_t* ch;   // input channel of each late spike
  const int16_t* bin;  // virtual fire phase of each late spike (k0 < bin <= T_v)
  const void* val;     // its value (sign included)
  const void* w;       // [Cin, Cp] weight, output channels zero-padded to whole blocks
  const void* first;   // [N, C] early potentials
  const void* bias;    // [C] added to first as it is read, or null
  const void* div;     // [Cp] divisor of every bin (1 beyond C), or null
  const void* thr;     // [T] thresholds
  int64_t N, C, Cp, T, k0, T_v, max_d;
  int8_t* out;
  int8_t* sg;          // signs (signed neurons), or null
};

// Row m's late spikes bucketed by phase: bucket q (virtual phase k0 + 1 + q) is och/oval[start[q] .. start[q + 1]),
// in list (channel) order.
template <typename scalar_t>
__attribute__((always_inline)) inline void bucket_row(const DenseLayer& L, int64_t m, int64_t nl, int32_t* start,
                                                      int32_t* och, scalar_t* oval) {
  const scalar_t* val = static_cast<const scalar_t*>(L.val);
  const int64_t j0 = L.ptr[m], j1 = L.ptr[m + 1];
  for (int64_t q = 0; q <= nl; ++q) start[q] = 0;
  for (int64_t j = j0; j < j1; ++j) ++start[L.bin[j] - L.k0];  // counts shifted by one: start[q + 1]
  for (int64_t q = 0; q < nl; ++q) start[q + 1] += start[q];
  for (int64_t j = j0; j < j1; ++j) {
    const int32_t at = start[L.bin[j] - L.k0 - 1]++;
    och[at] = L.ch[j];
    oval[at] = val[j];
  }
  for (int64_t q = nl; q > 0; --q) start[q] = start[q - 1];  // back to bucket starts
  start[0] = 0;
}

// acc = the sum over n spikes (channel ch[j], value v[j], in order) of weight row ch[j] x v[j], from zero: the 64
// lanes as GCC vectors of VB bytes (the target's vector width), so that the compiler neither jams two spikes into
// one scalar loop nor splits the sum.
template <typename scalar_t, int VB>
__attribute__((always_inline)) inline void accumulate(const scalar_t* __restrict W, int64_t Cp,
                                                      const int32_t* __restrict ch, const scalar_t* __restrict v,
                                                      int32_t n, scalar_t* __restrict acc) {
  typedef scalar_t vec __attribute__((vector_size(VB)));
  constexpr int NV = LANES * sizeof(scalar_t) / VB, VL = VB / sizeof(scalar_t);
  vec a[NV];
  for (int i = 0; i < NV; ++i) a[i] = vec{} * scalar_t(0);
  for (int32_t j = 0; j < n; ++j) {
    const scalar_t* wr = W + (int64_t)ch[j] * Cp;
    const scalar_t x = v[j];
    for (int i = 0; i < NV; ++i) {
      vec w;
      std::memcpy(&w, wr + i * VL, sizeof(vec));
      a[i] = a[i] + w * x;  // product, then sum: conv_exact's h[k] += w[k] * v
    }
  }
  std::memcpy(acc, a, sizeof(a));
}

// One block of 64 output channels of row m (w of them real): potentials and fire phases in registers through the
// phase loop. Adds to cnt: saturated, non-finite, fired neurons.
template <typename scalar_t, bool SIGNED, int VB>
__attribute__((always_inline)) inline void block(const DenseLayer& L, int64_t m, int64_t c0, const int32_t* start,
                                                 const int32_t* och, const scalar_t* oval, int64_t* cnt) {
  const scalar_t* f = static_cast<const scalar_t*>(L.first) + m * L.C + c0;
  const scalar_t* bv = static_cast<const scalar_t*>(L.bias);
  const scalar_t* __restrict dv = static_cast<const scalar_t*>(L.div);
  const scalar_t* __restrict W = static_cast<const scalar_t*>(L.w) + c0;
  const scalar_t* thr = static_cast<const scalar_t*>(L.thr);
  const int64_t w = std::min(LANES, L.C - c0);
  alignas(64) scalar_t p[LANES], acc[LANES];
  alignas(64) int32_t fz[LANES];
  int64_t nbad = 0;
  for (int64_t k = 0; k < LANES; ++k) {
    scalar_t e = scalar_t(0);  // the padding lanes: 0, never written out
    if (k < w) e = bv ? f[k] + bv[c0 + k] : f[k];
    p[k] = e;
    nbad += k < w && !(e - e == scalar_t(0));  // NaN or inf
    fz[k] = 0;
  }
  int64_t r = L.k0;  // virtual phases added so far
  for (int64_t t = 1; t <= L.T; ++t) {
    for (const int64_t upto = std::min(t + L.max_d, L.T_v); r < upto; ++r) {
      const int32_t j0 = start[r - L.k0], j1 = start[r - L.k0 + 1];
      if (j0 == j1) continue;  // an empty bin adds +0: no neuron's test or sign changes
      accumulate<scalar_t, VB>(W, L.Cp, och + j0, oval + j0, j1 - j0, acc);
      add_bin<scalar_t>(p, acc, dv != nullptr ? dv + c0 : nullptr, LANES);
    }
    const scalar_t th = thr[t - 1];
    const int32_t tt = (int32_t)t;
#pragma omp simd
    for (int64_t k = 0; k < LANES; ++k) fz[k] = fire_test<scalar_t, SIGNED>(fz[k], p[k], th, tt);
  }
  int64_t nsat = 0, nfired = 0;
  int8_t* o = L.out + m * L.C + c0;
  for (int64_t k = 0; k < w; ++k) {
    nsat += (SIGNED ? std::abs(p[k]) : p[k]) > scalar_t(1);
    nfired += fz[k] != 0;
    o[k] = (int8_t)(fz[k] < 0 ? -fz[k] : fz[k]);
  }
  if (SIGNED && L.sg != nullptr) {
    int8_t* s = L.sg + m * L.C + c0;
    for (int64_t k = 0; k < w; ++k) s[k] = fz[k] > 0 ? int8_t(1) : fz[k] < 0 ? int8_t(-1) : int8_t(0);
  }
  cnt[0] += nsat;
  cnt[1] += nbad;
  cnt[2] += nfired;
}

template <typename scalar_t, bool SIGNED, int VB>
__attribute__((always_inline)) inline void rows_body(const DenseLayer& L, int64_t m0, int64_t m1, int32_t* start,
                                                     int32_t* och, scalar_t* oval, int64_t* cnt) {
  const int64_t nl = L.T_v - L.k0;
  for (int64_t m = m0; m < m1; ++m) {
    bucket_row<scalar_t>(L, m, nl, start, och, oval);
    for (int64_t c0 = 0; c0 < L.C; c0 += LANES) block<scalar_t, SIGNED, VB>(L, m, c0, start, och, oval, cnt);
  }
}

template <typename scalar_t, bool SIGNED>
using RowsFn = void (*)(const DenseLayer&, int64_t, int64_t, int32_t*, int32_t*, scalar_t*, int64_t*);

template <typename scalar_t, bool SIGNED>
void rows_portable(const DenseLayer& L, int64_t m0, int64_t m1, int32_t* start, int32_t* och, scalar_t* oval,
                   int64_t* cnt) {
  rows_body<scalar_t, SIGNED, 16>(L, m0, m1, start, och, oval, cnt);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPIKEGCN_DENSE_X86 1
// The same code compiled for wider vectors (no FMA: -ffp-contract=off keeps products and sums separate).
template <typename scalar_t, bool SIGNED>
__attribute__((target("avx2"))) void rows_avx2(const DenseLayer& L, int64_t m0, int64_t m1, int32_t* start,
                                               int32_t* och, scalar_t* oval, int64_t* cnt) {
  rows_body<scalar_t, SIGNED, 32>(L, m0, m1, start, och, oval, cnt);
}

template <typename scalar_t, bool SIGNED>
__attribute__((target("avx512f"))) void rows_avx512(const DenseLayer& L, int64_t m0, int64_t m1, int32_t* start,
                                                    int32_t* och, scalar_t* oval, int64_t* cnt) {
  rows_body<scalar_t, SIGNED, 64>(L, m0, m1, start, och, oval, cnt);
}
#endif

template <typename scalar_t, bool SIGNED>
RowsFn<scalar_t, SIGNED> pick(int64_t isa) {
#ifdef SPIKEGCN_DENSE_X86
  if (isa >= 2 && __builtin_cpu_supports("avx512f")) return rows_avx512<scalar_t, SIGNED>;
  if (isa >= 1 && __builtin_cpu_supports("avx2")) return rows_avx2<scalar_t, SIGNED>;
#endif
  return rows_portable<scalar_t, SIGNED>;
}

template <typename scalar_t, bool SIGNED>
void run(const DenseLayer& L, int64_t isa, int64_t max_row, int64_t* counts) {
  const RowsFn<scalar_t, SIGNED> rows = pick<scalar_t, SIGNED>(isa);
  const int64_t nl = L.T_v - L.k0;
  int64_t sat = 0, bad = 0, fired = 0;
#pragma omp parallel reduction(+ : sat, bad, fired) if (L.N * L.C >= PARALLEL_MIN)
  {
    int64_t cnt[3] = {0, 0, 0};
    std::vector<int32_t> start(nl + 2), och(max_row + 1);
    std::vector<scalar_t> oval(max_row + 1);
#pragma omp for schedule(dynamic, 16)
    for (int64_t b = 0; b < (L.N + 15) / 16; ++b)
      rows(L, b * 16, std::min(L.N, b * 16 + 16), start.data(), och.data(), oval.data(), cnt);
    sat += cnt[0];
    bad += cnt[1];
    fired += cnt[2];
  }
  counts[0] = sat;
  counts[1] = bad;
  counts[2] = fired;
}

}  // namespace

// first: [N, C] early potentials; late_ptr [N + 1], late_ch, late_bin, late_val: each row's late spikes (channel
// order); weight: [Cin, C]; thr: [T]; div: [C] divisor of every bin, or empty; bias: [C] added to first as it is
// read, or empty. Returns the fire phases [N, C] (int8), their signs (int8, empty unless is_signed), and the
// numbers of neurons whose final |potential| exceeds 1, of non-finite early potentials and of neurons that fired.
std::vector<torch::Tensor> dense_exact(torch::Tensor first, torch::Tensor late_ptr, torch::Tensor late_ch,
                                       torch::Tensor late_bin, torch::Tensor late_val, torch::Tensor weight,
                                       torch::Tensor thr, int64_t k0, int64_t T_v, int64_t max_d, torch::Tensor div,
                                       bool is_signed, int64_t isa, torch::Tensor bias) {
  TORCH_CHECK(first.dim() == 2 && first.is_contiguous(), "dense_exact: first must be a contiguous [N, C]");
  const int64_t N = first.size(0), C = first.size(1), T = thr.numel(), L = late_val.numel();
  const auto dt = first.scalar_type();
  TORCH_CHECK(T <= 127 && k0 >= 0 && T_v > k0 && T_v - k0 < (1 << 15) && max_d >= 0,
              "dense_exact: bad phase arguments");
  TORCH_CHECK(thr.scalar_type() == dt && thr.is_contiguous(), "dense_exact: thresholds and potentials differ in dtype");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == C && weight.scalar_type() == dt,
              "dense_exact: weight must be a [Cin, C] of the potentials' dtype");
  TORCH_CHECK(late_ptr.numel() == N + 1 && late_ptr.scalar_type() == torch::kInt64 && late_ptr.is_contiguous(),
              "dense_exact: late_ptr must hold N + 1 int64 offsets");
  TORCH_CHECK(late_ch.numel() == L && late_bin.numel() == L && late_ch.scalar_type() == torch::kInt32 &&
                  late_bin.scalar_type() == torch::kInt16 && late_val.scalar_type() == dt,
              "dense_exact: late spike lists disagree in length or dtype");
  const int64_t* pt = late_ptr.data_ptr<int64_t>();
  TORCH_CHECK(pt[0] == 0 && pt[N] == L, "dense_exact: late_ptr does not span its lists");
  int64_t max_row = 0;
  for (int64_t m = 0; m < N; ++m) max_row = std::max(max_row, pt[m + 1] - pt[m]);
  TORCH_CHECK(max_row < (int64_t(1) << 31), "dense_exact: more than 2^31 late spikes in one row");
  const int16_t* bins = late_bin.data_ptr<int16_t>();
  for (int64_t j = 0; j < L; ++j)
    TORCH_CHECK(bins[j] > k0 && bins[j] <= T_v, "dense_exact: a late spike's phase lies outside k0 + 1 .. T_v");
  const int64_t Cp = (C + LANES - 1) / LANES * LANES;
  auto wp = torch::zeros({weight.size(0), Cp}, first.options());  // whole blocks: the padding lanes read zeros
  wp.narrow(1, 0, C).copy_(weight);
  const bool has_div = div.numel() > 0;
  TORCH_CHECK(!has_div || (div.numel() == C && div.scalar_type() == dt),
              "dense_exact: div must be a [C] of the potentials' dtype, or empty");
  auto dp = torch::ones({Cp}, first.options());
  if (has_div) dp.narrow(0, 0, C).copy_(div.reshape(-1));
  TORCH_CHECK(!bias.numel() || (bias.numel() == C && bias.is_contiguous() && bias.scalar_type() == dt),
              "dense_exact: bias must be a contiguous [C] of the potentials' dtype, or empty");
  auto ch = late_ch.contiguous(), bn = late_bin.contiguous(), vl = late_val.contiguous();
  auto out = torch::empty({N, C}, torch::kInt8);
  auto sg = is_signed ? torch::empty({N, C}, torch::kInt8) : torch::empty({0}, torch::kInt8);
  int64_t counts[3] = {0, 0, 0};
  AT_DISPATCH_FLOATING_TYPES(dt, "dense_exact", [&] {
    const DenseLayer Ly{pt, ch.data_ptr<int32_t>(), bn.data_ptr<int16_t>(), vl.data_ptr(), wp.data_ptr(),
                        first.data_ptr(), bias.numel() ? bias.data_ptr() : nullptr,
                        has_div ? dp.data_ptr() : nullptr, thr.data_ptr(), N, C, Cp, T, k0, T_v, max_d,
                        out.data_ptr<int8_t>(), is_signed ? sg.data_ptr<int8_t>() : nullptr};
    if (is_signed) run<scalar_t, true>(Ly, isa, max_row, counts);
    else run<scalar_t, false>(Ly, isa, max_row, counts);
  });
  return {out, sg, torch::tensor(counts[0]), torch::tensor(counts[1]), torch::tensor(counts[2])};
}

// The neurons of an operator whose late input phases come as bins in ANN units (bins [N, T_in - k0, C]: bin q holds
// the contribution of input phase k0 + 1 + q; the graph engine's composite operators, spikegcn.operators): the rule
// of spikegcn.neuron.one_spike_fire on the event path, P = first, then at output phase t the bins of the phases up to
// min(t + Tw, T_in) added (bin / div), fire at the first |P| >= thr[t - 1], the sign of P. Row by row, the C
// neurons in lockstep.
template <bool SIGNED>
__attribute__((always_inline)) inline void fire_bins_rows(const float* first, const float* bins, const float* div,
                                                          const float* thr, int64_t m0, int64_t m1, int64_t C,
                                                          int64_t T, int64_t Tw, int64_t k0, int64_t T_in, float* P,
                                                          int8_t* ph, int8_t* sg, int64_t* cnt) {
  const int64_t nl = T_in - k0;
  for (int64_t m = m0; m < m1; ++m) {
    const float* f = first + m * C;
    int8_t* o = ph + m * C;
    int8_t* s = sg ? sg + m * C : nullptr;
    int64_t nbad = 0;
#pragma omp simd reduction(+ : nbad)
    for (int64_t k = 0; k < C; ++k) {
      P[k] = f[k];
      o[k] = 0;
      nbad += !(f[k] - f[k] == 0.f);
    }
    int64_t r = k0;
    for (int64_t t = 1; t <= T; ++t) {
      for (const int64_t upto = std::min(t + Tw, T_in); r < upto; ++r) {
        add_bin<float>(P, bins + (m * nl + r - k0) * C, div, C);
      }
      const float th = thr[t - 1];
      const int8_t tt = (int8_t)t;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) {
        const bool now = (o[k] == 0) & ((SIGNED ? std::abs(P[k]) : P[k]) >= th);
        o[k] = now ? tt : o[k];
      }
      if (SIGNED) {  // the sign of the potential a neuron fires on (s starts at 0)
#pragma omp simd
        for (int64_t k = 0; k < C; ++k)
          if (o[k] == tt) s[k] = P[k] > 0.f ? int8_t(1) : P[k] < 0.f ? int8_t(-1) : int8_t(0);
      }
    }
    int64_t nsat = 0, nfired = 0;
#pragma omp simd reduction(+ : nsat, nfired)
    for (int64_t k = 0; k < C; ++k) {
      nsat += (SIGNED ? std::abs(P[k]) : P[k]) > 1.f;
      nfired += o[k] != 0;
    }
    cnt[0] += nsat;
    cnt[1] += nbad;
    cnt[2] += nfired;
  }
}

template <bool SIGNED>
void fire_bins_portable(const float* first, const float* bins, const float* div, const float* thr, int64_t m0,
                        int64_t m1, int64_t C, int64_t T, int64_t Tw, int64_t k0, int64_t T_in, float* P, int8_t* ph,
                        int8_t* sg, int64_t* cnt) {
  fire_bins_rows<SIGNED>(first, bins, div, thr, m0, m1, C, T, Tw, k0, T_in, P, ph, sg, cnt);
}

#ifdef SPIKEGCN_DENSE_X86
template <bool SIGNED>
__attribute__((target("avx512f,avx512bw"))) void fire_bins_avx512(const float* first, const float* bins,
                                                                  const float* div, const float* thr, int64_t m0,
                                                                  int64_t m1, int64_t C, int64_t T, int64_t Tw,
                                                                  int64_t k0, int64_t T_in, float* P, int8_t* ph,
                                                                  int8_t* sg, int64_t* cnt) {
  fire_bins_rows<SIGNED>(first, bins, div, thr, m0, m1, C, T, Tw, k0, T_in, P, ph, sg, cnt);
}
#endif

// first: [N, C] early potentials (normalised, bias included); bins: [N, T_in - k0, C]; div: [C] or empty; thr: [T].
// Returns the fire phases and signs (int8 [N, C]; signs empty unless is_signed) and the numbers of neurons whose
// final |potential| exceeds 1, of non-finite early potentials and of neurons that fired.
std::vector<torch::Tensor> fire_bins(torch::Tensor first, torch::Tensor bins, torch::Tensor div, torch::Tensor thr,
                                     int64_t Tw, int64_t k0, int64_t T_in, bool is_signed, int64_t isa) {
  TORCH_CHECK(first.dim() == 2 && first.is_contiguous() && first.scalar_type() == torch::kFloat32,
              "fire_bins: first must be a contiguous float32 [N, C]");
  const int64_t N = first.size(0), C = first.size(1), T = thr.numel();
  TORCH_CHECK(k0 >= 0 && T_in > k0 && Tw >= 0 && T <= 127, "fire_bins: bad phase arguments");
  TORCH_CHECK(bins.dim() == 3 && bins.size(0) == N && bins.size(1) == T_in - k0 && bins.size(2) == C &&
                  bins.is_contiguous() && bins.scalar_type() == torch::kFloat32,
              "fire_bins: bins must be a contiguous float32 [N, T_in - k0, C]");
  TORCH_CHECK(thr.is_contiguous() && thr.scalar_type() == torch::kFloat32, "fire_bins: thresholds must be float32");
  TORCH_CHECK(div.numel() == 0 || (div.numel() == C && div.is_contiguous() && div.scalar_type() == torch::kFloat32),
              "fire_bins: div must be a contiguous float32 [C], or empty");
  auto ph = torch::empty({N, C}, torch::kInt8);
  auto sg = is_signed ? torch::zeros({N, C}, torch::kInt8) : torch::empty({0}, torch::kInt8);
  using Fn = void (*)(const float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                      int64_t, int64_t, int64_t, float*, int8_t*, int8_t*, int64_t*);
  Fn fn = is_signed ? fire_bins_portable<true> : fire_bins_portable<false>;
#ifdef SPIKEGCN_DENSE_X86
  if (isa >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    fn = is_signed ? fire_bins_avx512<true> : fire_bins_avx512<false>;
#endif
  const float* dv = div.numel() ? div.data_ptr<float>() : nullptr;
  int64_t sat = 0, bad = 0, fired = 0;
#pragma omp parallel reduction(+ : sat, bad, fired) if (N * C >= PARALLEL_MIN)
  {
    int64_t cnt[3] = {0, 0, 0};
    std::vector<float> P(C + 16);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < (N + 63) / 64; ++b)
      fn(first.data_ptr<float>(), bins.data_ptr<float>(), dv, thr.data_ptr<float>(), b * 64, std::min(N, b * 64 + 64),
         C, T, Tw, k0, T_in, P.data(), ph.data_ptr<int8_t>(), is_signed ? sg.data_ptr<int8_t>() : nullptr, cnt);
    sat += cnt[0];
    bad += cnt[1];
    fired += cnt[2];
  }
  return {ph, sg, torch::tensor(sat), torch::tensor(bad), torch::tensor(fired)};
}

void register_dense_exact(pybind11::module_& m) {
  m.def("dense_exact", &dense_exact, "exact-mode one-spike dense layer, phase bins in registers");
  m.def("fire_bins", &fire_bins, "one-spike neurons on an operator's late-phase bins");
}
