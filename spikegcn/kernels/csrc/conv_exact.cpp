// Exact-mode one-spike convolution layers with a wait Tw < T: the fused kernel of the graph path applied to
// im2col rows (see spikegcn/kernels/conv_cpu.py).
//
// Output row m is one output position (n, oy, ox) with its C output channels: its early potentials are read from
// the NCHW tensor `first` and its phases written to an NCHW output (no transposed copies). Its early potential
// (bias + the dense convolution of every input spike that arrived before output phase 1) comes in `first`. The late
// spikes (virtual phase r > k0) are listed per input position; for each kernel offset the row reads the late spikes
// at the input position under it and adds value x weight[ky][kx][c][:] (a C-wide axpy) into the bin of their phase.
// The neurons then add the bins phase by phase and fire at the first threshold crossing (the rule of
// spikegcn.neuron.one_spike_fire with wait max_d over T_v virtual phases), all C channels of the row in lockstep.
// Cost: the dense convolution plus late spikes x fan-out.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

// One output row: the late contributions into its phase bins (bins[(r - k0 - 1) * C + k]), then its C neurons in
// lockstep (the same additions in the same order as one neuron at a time; local int32 phases so that the compiler
// sees no aliasing and vectorises over the channels); a bin is divided by L.div first where given, as the graph
// event path does, so the floats are the same. Signed neurons fire on |potential| and write their sign to sg.
// Adds to *sat / *bad.
// CC > 0: the channel count as a compile-time constant (16, 32, 64, 128, 256: loops unrolled, no remainders);
// 0: L.C.
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void row_body(const Layer& L, int64_t m, const scalar_t* first,
                                                    const scalar_t* thr, scalar_t* __restrict bins,
                                                    scalar_t* __restrict p, int32_t* __restrict fz, int8_t* out,
                                                    int8_t* sg, int64_t* sat, int64_t* bad) {
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
  // first and out are NCHW: channel k of the row at base + k * HWo (no transposed copies around the kernel)
  const int64_t HWo = L.Ho * L.Wo, base = n * C * HWo + oy * L.Wo + ox;
  int64_t nbad = 0;
  for (int64_t k = 0; k < C; ++k) {
    const scalar_t f = first[base + k * HWo];
    p[k] = f;
    fz[k] = 0;
    nbad += !(f - f == scalar_t(0));  // NaN or inf
  }
  const scalar_t* __restrict dv = static_cast<const scalar_t*>(L.div);
  int64_t r = k0;  // virtual phases added so far
  for (int64_t t = 1; t <= L.T; ++t) {
    for (const int64_t upto = std::min(t + L.max_d, L.T_v); r < upto; ++r)
      add_bin<scalar_t, CC>(L, bins + (r - k0) * C, dv, p);
    const scalar_t th = thr[t - 1];
    const int32_t tt = (int32_t)t;
    if (L.is_signed) {
      for (int64_t k = 0; k < C; ++k) {
        if (fz[k] == 0 && std::abs(p[k]) >= th) {
          fz[k] = tt;
          sg[base + k * HWo] = p[k] > scalar_t(0) ? 1 : -1;
        }
      }
    } else {
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) fz[k] = (fz[k] == 0 && p[k] >= th) ? tt : fz[k];
    }
  }
  // p is now the final potential: input phases past T + max_d reach no output phase (the phase-by-phase path stops
  // there too), so the bins after them are not added
  int64_t nsat = 0;
  if (L.is_signed) {
    for (int64_t k = 0; k < C; ++k) nsat += std::abs(p[k]) > scalar_t(1);
  } else {
#pragma omp simd reduction(+ : nsat)
    for (int64_t k = 0; k < C; ++k) nsat += p[k] > scalar_t(1);
  }
  for (int64_t k = 0; k < C; ++k) out[base + k * HWo] = (int8_t)fz[k];
  *sat += nsat;
  *bad += nbad;
}

template <typename scalar_t>
using RowFn = void (*)(const Layer&, int64_t, const scalar_t*, const scalar_t*, scalar_t*, scalar_t*, int32_t*,
                       int8_t*, int8_t*, int64_t*, int64_t*);

template <typename scalar_t, int CC>
void row_portable(const Layer& L, int64_t m, const scalar_t* first, const scalar_t* thr, scalar_t* bins, scalar_t* p,
                  int32_t* fz, int8_t* out, int8_t* sg, int64_t* sat, int64_t* bad) {
  row_body<scalar_t, CC>(L, m, first, thr, bins, p, fz, out, sg, sat, bad);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPIKEGCN_CONV_X86 1
// The same code compiled for wider vectors (no FMA: -ffp-contract=off keeps products and sums separate).
template <typename scalar_t, int CC>
__attribute__((target("avx2"))) void row_avx2(const Layer& L, int64_t m, const scalar_t* first, const scalar_t* thr,
                                              scalar_t* bins, scalar_t* p, int32_t* fz, int8_t* out, int8_t* sg,
                                              int64_t* sat, int64_t* bad) {
  row_body<scalar_t, CC>(L, m, first, thr, bins, p, fz, out, sg, sat, bad);
}

template <typename scalar_t, int CC>
__attribute__((target("avx512f"))) void row_avx512(const Layer& L, int64_t m, const scalar_t* first,
                                                   const scalar_t* thr, scalar_t* bins, scalar_t* p, int32_t* fz,
                                                   int8_t* out, int8_t* sg, int64_t* sat, int64_t* bad) {
  row_body<scalar_t, CC>(L, m, first, thr, bins, p, fz, out, sg, sat, bad);
}
#endif

template <typename scalar_t, int CC>
RowFn<scalar_t> pick_isa(int64_t isa) {
#ifdef SPIKEGCN_CONV_X86
  if (isa >= 2 && __builtin_cpu_supports("avx512f")) return row_avx512<scalar_t, CC>;
  if (isa >= 1 && __builtin_cpu_supports("avx2")) return row_avx2<scalar_t, CC>;
#endif
  return row_portable<scalar_t, CC>;
}

template <typename scalar_t>
RowFn<scalar_t> pick_row(int64_t isa, int64_t C) {
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
  const int64_t R = N * Ho * Wo;
  const RowFn<scalar_t> row = pick_row<scalar_t>(isa, C);
  int64_t sat = 0, bad = 0;
#pragma omp parallel reduction(+ : sat, bad)
  {
    std::vector<scalar_t> bins(std::max<int64_t>(T_v - k0, 1) * C + 16), P(C + 16);
    std::vector<int32_t> fz(C + 16);
#pragma omp for schedule(dynamic, 64)
    for (int64_t m = 0; m < R; ++m) row(L, m, first, thr, bins.data(), P.data(), fz.data(), out, sg, &sat, &bad);
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
                                     int64_t offset) {
  check_lists_input(phase, sign, "late_list");
  TORCH_CHECK(phase.scalar_type() == torch::kInt8, "late_list: phases must be int8");
  TORCH_CHECK(table.dim() == 1 && table.is_contiguous(), "late_list: table must be a contiguous vector");
  const int64_t N = phase.size(0), C = phase.size(1), HW = phase.size(2);
  const int8_t* ph = phase.data_ptr<int8_t>();
  auto ptr = torch::zeros({N * HW + 1}, torch::kInt64);
  const int64_t L = count_late(ph, N, C, HW, [lo](int8_t p) { return (int32_t)(p > lo); }, ptr.data_ptr<int64_t>());
  auto ch = torch::empty({L}, torch::kInt32);
  auto bin = torch::empty({L}, torch::kInt16);
  auto val = torch::empty({L}, table.options());
  const int8_t* sg = sign.numel() ? sign.data_ptr<int8_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "late_list", [&] {
    const scalar_t* tb = table.data_ptr<scalar_t>();
    auto emit = [tb, lo, offset](int8_t p, scalar_t s, int32_t c, int64_t& j, int64_t end, int32_t* ch,
                                 int16_t* bin, scalar_t* val) {
      // branch-free: every channel is written at the cursor (a position's last slot taken: a scratch slot), the
      // cursor moves on for late spikes only
      int32_t sch;
      int16_t sbin;
      scalar_t sval;
      const bool room = j < end;
      *(room ? ch + j : &sch) = c;
      *(room ? bin + j : &sbin) = (int16_t)(p + offset);
      *(room ? val + j : &sval) = tb[p > lo ? p : 0] * s;  // phases 0..T (checked by the early decode)
      j += p > lo;
    };
    fill_lists<scalar_t>(ph, sg, N, C, HW, ptr.data_ptr<int64_t>(), emit, ch.data_ptr<int32_t>(),
                         bin.data_ptr<int16_t>(), val.data_ptr<scalar_t>());
  });
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
