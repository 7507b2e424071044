// The data of an exact-mode convolution layer (conv_exact.cpp) and the two passes of a tile of output rows that
// feed its neurons: the early potentials (the bias added as they are read) and the late spikes' phase bins.
// Included by conv_exact.cpp only.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

namespace {

struct ConvInput {  // one synaptic input of the layer, as a convolution
  const int64_t* ptr;  // [N * H * W + 1] late spikes of input position p: ptr[p] .. ptr[p + 1]
  const int32_t* ch;   // input channel of each late spike
  const int16_t* bin;  // virtual fire phase of each late spike (k0 < bin <= T_v)
  const int32_t* pos;  // input position of each late spike (the p of its ptr range)
  const void* val;     // normalised value of each late spike
  const void* w;       // [kh, kw, Cin, C] weights
  int64_t H, W, Cin, kh, kw, sh, sw, ph, pw, dh, dw;
};

struct Layer {  // what every output row needs
  const ConvInput* ins;
  int64_t n_in, Ho, Wo, C, T, k0, T_v, max_d;
  const void* div;  // [C] divisor of each bin (the graph engine's lambda: bins in ANN units), or nullptr
  bool is_signed;   // signed neurons: fire on |potential|, sign written to sg
  const void* bias;  // [C] added to the early potentials as they are read (first + bias, as z.add_(bias)), or nullptr
};

// A tile: R rows of C output channels, up to TILE_LANES neurons
constexpr int64_t TILE_LANES = 512;  // R x C: a whole output line of each ResNet-20 stage (32 x 16, 16 x 32, 8 x 64)
constexpr int64_t TILE_ROWS = 32;
// rows per tile (the buffers hold this many rows)
constexpr int64_t tile_rows(int64_t C) {
  return std::max<int64_t>(1, std::min<int64_t>(TILE_ROWS, TILE_LANES / std::max<int64_t>(C, 1)));
}

// The late contributions of the tile's rows m0 .. m0 + R - 1 into their phase bins (row r's bin of virtual phase
// b at BINS[r * nbc + (b - k0 - 1) * C]), input by input and, within an input, kernel row by kernel row. Stride-1
// inputs walk the input line under the rows once (add_line); strided inputs visit, tap by tap, the positions
// under the rows one by one, and rows of 1 x 1 maps read one contiguous run of the lists (add_run). Every row's
// bins get the same additions in the same order as row by row: tap by tap, a position's spikes in list order.

// h += w x v over the C output channels (one late spike through one tap, into one phase bin).
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void axpy(scalar_t* __restrict h, const scalar_t* __restrict w, scalar_t v,
                                                int64_t C_) {
  const int64_t C = CC > 0 ? CC : C_;
#pragma omp simd
  for (int64_t k = 0; k < C; ++k) h[k] += w[k] * v;
}

// Late spike j into the bins of its row (row_bins): value x weight column of its channel, in the bin of its phase.
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void add_spike(const ConvInput& in, int64_t j, const scalar_t* wk, int64_t C_,
                                                     scalar_t* __restrict row_bins, int64_t k0) {
  const int64_t C = CC > 0 ? CC : C_;
  axpy<scalar_t, CC>(row_bins + (int64_t)(in.bin[j] - k0 - 1) * C, wk + (int64_t)in.ch[j] * C,
                     static_cast<const scalar_t*>(in.val)[j], C);
}

template <typename scalar_t, int CC>
__attribute__((always_inline)) inline void add_run(const ConvInput& in, int64_t pa, int64_t n_rows, int64_t sw,
                                                   int64_t row0, int64_t nbc, int64_t k0, const scalar_t* wk,
                                                   int64_t C_, scalar_t* __restrict bins) {
  if (sw != 1) {
    for (int64_t q = 0; q < n_rows; ++q)
      for (int64_t j = in.ptr[pa + q * sw], e = in.ptr[pa + q * sw + 1]; j < e; ++j)
        add_spike<scalar_t, CC>(in, j, wk, C_, bins + (row0 + q) * nbc, k0);
    return;
  }
  for (int64_t j = in.ptr[pa], e = in.ptr[pa + n_rows]; j < e; ++j)
    add_spike<scalar_t, CC>(in, j, wk, C_, bins + (row0 + in.pos[j] - pa) * nbc, k0);
}

// The stride-1 positions of add_line (below) with every tap on its segment, spikes ja .. jb - 1: no bounds tests,
// the taps unrolled for the common 3-wide kernel (per tap a product, an add and a store). Its own function
// (add_line_full_<isa>, not inlined): inside the tile's body the loop's pointers and strides spilled to the stack.
// Spike j's bin in tap 0's row is bins[off0 + pos * nbc + bin * C]; tap kx's is kx * dw rows before.
template <typename scalar_t, int CC, int KW>
__attribute__((always_inline)) inline void add_line_full_body(const ConvInput& in, int64_t ja, int64_t jb,
                                                              scalar_t* __restrict bins, int64_t off0, int64_t nbc,
                                                              const scalar_t* __restrict wky, int64_t C_) {
  const int64_t C = CC > 0 ? CC : C_, tap = in.Cin * C, kw = KW > 0 ? KW : in.kw, rstep = in.dw * nbc;
  const int32_t* __restrict pos = in.pos;
  const int16_t* __restrict bin = in.bin;
  const int32_t* __restrict ch = in.ch;
  const scalar_t* __restrict val = static_cast<const scalar_t*>(in.val);
  for (int64_t j = ja; j < jb; ++j) {
    scalar_t* __restrict hb = bins + (off0 + (int64_t)pos[j] * nbc + (int64_t)bin[j] * C);
    const scalar_t* __restrict wc = wky + (int64_t)ch[j] * C;
    const scalar_t v = val[j];
    for (int64_t kx = 0; kx < kw; ++kx) axpy<scalar_t, CC>(hb - kx * rstep, wc + kx * tap, v, C);
  }
}

#define SPIKEGCN_LINE_FULL(NAME, ATTR)                                                                             \
  template <typename scalar_t, int CC, int KW>                                                                     \
  ATTR __attribute__((noinline)) void NAME(const ConvInput& in, int64_t ja, int64_t jb, scalar_t* bins,          \
                                           int64_t off0, int64_t nbc, const scalar_t* wky, int64_t C_) {           \
    add_line_full_body<scalar_t, CC, KW>(in, ja, jb, bins, off0, nbc, wky, C_);                                     \
  }
SPIKEGCN_LINE_FULL(add_line_full_0, )
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
SPIKEGCN_LINE_FULL(add_line_full_1, __attribute__((target("avx2"))))
SPIKEGCN_LINE_FULL(add_line_full_2, __attribute__((target("avx512f"))))
#endif
#undef SPIKEGCN_LINE_FULL

// add_line_full_<ISA> (0 portable, 1 AVX2, 2 AVX-512: the caller's instruction set)
template <typename scalar_t, int CC, int KW, int ISA>
__attribute__((always_inline)) inline void add_line_full(const ConvInput& in, int64_t ja, int64_t jb, scalar_t* bins,
                                                         int64_t off0, int64_t nbc, const scalar_t* wky, int64_t C) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (ISA == 2) return add_line_full_2<scalar_t, CC, KW>(in, ja, jb, bins, off0, nbc, wky, C);
  if constexpr (ISA == 1) return add_line_full_1<scalar_t, CC, KW>(in, ja, jb, bins, off0, nbc, wky, C);
#endif
  add_line_full_0<scalar_t, CC, KW>(in, ja, jb, bins, off0, nbc, wky, C);
}

// Stride 1: one walk over the input line y (kernel row ky) under the rows oxa .. oxa + seg - 1 of one output line,
// each late spike added into every row whose tap kx reads it (ox = x + pw - kx * dw). A spike's phase bin, channel
// and value are read once for its up to kw taps. A row's bins get the same additions in the same order as tap by
// tap: for one row, ascending x is ascending kx, and a position's spikes come in list order. The positions whose
// every tap lands on the segment (all but up to kw - 1 at each end) go through add_line_full, in their place in
// that order.
template <typename scalar_t, int CC, int ISA>
__attribute__((always_inline)) inline void add_line(const ConvInput& in, int64_t pl, int64_t oxa, int64_t seg,
                                                    int64_t row0, int64_t nbc, int64_t k0, const scalar_t* wky,
                                                    int64_t C_, scalar_t* __restrict bins) {
  const int64_t C = CC > 0 ? CC : C_, tap = in.Cin * C, reach = (in.kw - 1) * in.dw;
  const int64_t xlo = std::max<int64_t>(0, oxa - in.pw);
  const int64_t xhi = std::min<int64_t>(in.W - 1, oxa + seg - 1 - in.pw + reach);
  if (xlo > xhi) return;
  const scalar_t* val = static_cast<const scalar_t*>(in.val);
  // the positions with every tap on the segment: x + pw - oxa - reach >= 0 and x + pw - oxa < seg
  const int64_t flo = std::max(xlo, oxa - in.pw + reach), fhi = std::min(xhi, oxa + seg - 1 - in.pw);
  auto partial = [&](int64_t ja, int64_t jb) {
    for (int64_t j = ja; j < jb; ++j) {
      const int64_t ox0 = in.pos[j] - pl + in.pw - oxa;  // the row (from oxa) that tap 0 adds it into
      scalar_t* __restrict hb = bins + (int64_t)(in.bin[j] - k0 - 1) * C;  // its phase's bin in row 0
      const scalar_t* __restrict wc = wky + (int64_t)in.ch[j] * C;
      const scalar_t v = val[j];
      for (int64_t kx = 0; kx < in.kw; ++kx) {
        const int64_t o = ox0 - kx * in.dw;
        if (o < 0 || o >= seg) continue;
        axpy<scalar_t, CC>(hb + (row0 + o) * nbc, wc + kx * tap, v, C);
      }
    }
  };
  if (flo > fhi) {
    partial(in.ptr[pl + xlo], in.ptr[pl + xhi + 1]);
    return;
  }
  partial(in.ptr[pl + xlo], in.ptr[pl + flo]);
  // tap 0's row in the tile is pos - (pl - pw + oxa - row0); the bin of phase b is b - k0 - 1 in it
  const int64_t off0 = -(pl - in.pw + oxa - row0) * nbc - (k0 + 1) * C;
  const int64_t ja = in.ptr[pl + flo], jb = in.ptr[pl + fhi + 1];
  if (ja < jb) {
    if (in.kw == 3)
      add_line_full<scalar_t, CC, 3, ISA>(in, ja, jb, bins, off0, nbc, wky, C);
    else
      add_line_full<scalar_t, CC, 0, ISA>(in, ja, jb, bins, off0, nbc, wky, C);
  }
  partial(in.ptr[pl + fhi + 1], in.ptr[pl + xhi + 1]);
}

template <typename scalar_t, int CC, int ISA>
__attribute__((always_inline)) inline void late_bins(const Layer& L, int64_t m0, int64_t R, scalar_t* __restrict bins) {
  const int64_t C = CC > 0 ? CC : L.C, k0 = L.k0, nbc = (L.T_v - k0) * C, HWo = L.Ho * L.Wo;
  for (int64_t q = 0; q < R * nbc; ++q) bins[q] = scalar_t(0);
  for (int64_t i = 0; i < L.n_in; ++i) {
    const ConvInput& in = L.ins[i];
    const scalar_t* w = static_cast<const scalar_t*>(in.w);
    if (HWo == 1 && in.H == 1 && in.W == 1 && in.kh == 1 && in.kw == 1 && in.ph == 0 && in.pw == 0) {
      // 1 x 1 maps, no padding: row r reads position m0 + r
      add_run<scalar_t, CC>(in, m0, R, 1, 0, nbc, k0, w, C, bins);
      continue;
    }
    for (int64_t ra = 0; ra < R;) {  // a run of rows on one output line
      const int64_t m = m0 + ra, n = m / HWo, oy = (m / L.Wo) % L.Ho, oxa = m % L.Wo;
      const int64_t seg = std::min(R - ra, L.Wo - oxa);
      for (int64_t ky = 0; ky < in.kh; ++ky) {
        const int64_t y = oy * in.sh - in.ph + ky * in.dh;
        if (y < 0 || y >= in.H) continue;
        if (in.sw == 1) {
          add_line<scalar_t, CC, ISA>(in, (n * in.H + y) * in.W, oxa, seg, ra, nbc, k0, w + ky * in.kw * in.Cin * C, C,
                                      bins);
          continue;
        }
        for (int64_t kx = 0; kx < in.kw; ++kx) {
          const int64_t xb = kx * in.dw - in.pw, lim = in.W - 1 - xb;  // x = ox * sw + xb must lie in 0 .. W - 1
          if (lim < 0) continue;
          const int64_t olo = std::max(oxa, xb < 0 ? (-xb + in.sw - 1) / in.sw : int64_t(0));
          const int64_t ohi = std::min(oxa + seg, lim / in.sw + 1);
          if (olo >= ohi) continue;
          const int64_t pa = (n * in.H + y) * in.W + olo * in.sw + xb;
          add_run<scalar_t, CC>(in, pa, ohi - olo, in.sw, ra + olo - oxa, nbc, k0,
                                w + (ky * in.kw + kx) * in.Cin * C, C, bins);
        }
      }
      ra += seg;
    }
  }
}

// The tile's early potentials into P ([R, C]): element (r, k) of first at f0[k * ks + r * rs], plus the bias (as
// the torch path's z.add_(bias)). Returns the non-finite sums.
template <typename scalar_t, int CC>
__attribute__((always_inline)) inline int64_t gather_early(const Layer& L, int64_t R, const scalar_t* f0, int64_t ks,
                                                           int64_t rs, scalar_t* __restrict P) {
  const int64_t C = CC > 0 ? CC : L.C;
  const scalar_t* bv = static_cast<const scalar_t*>(L.bias);
  int64_t nbad = 0;
  for (int64_t k = 0; k < C; ++k) {
    const scalar_t* fk = f0 + k * ks;
    if (bv != nullptr) {
      const scalar_t b = bv[k];
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t f = fk[r * rs] + b;
        P[r * C + k] = f;
        nbad += !(f - f == scalar_t(0));  // NaN or inf
      }
    } else {
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t f = fk[r * rs];
        P[r * C + k] = f;
        nbad += !(f - f == scalar_t(0));
      }
    }
  }
  return nbad;
}

}  // namespace
