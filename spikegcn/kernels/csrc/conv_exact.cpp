// Exact-mode one-spike convolution layers with a wait Tw < T: the fused kernel of the graph path applied to
// im2col rows (see spikegcn/kernels/conv_cpu.py).
//
// Output row m is one output position (n, oy, ox) with its C output channels (channels last). Its early
// potential (bias + the dense convolution of every input spike that arrived before output phase 1) comes in
// `first`. The late spikes (virtual phase r > k0) are listed per input position; for each kernel offset the row
// reads the late spikes at the input position under it and adds value x weight[ky][kx][c][:] (a C-wide axpy)
// into the bin of their phase. The neurons then add the bins phase by phase and fire at the first threshold
// crossing (the rule of spikegcn.neuron.one_spike_fire with wait max_d over T_v virtual phases). Cost: the
// dense convolution plus late spikes x fan-out.
#include <torch/extension.h>

#include <algorithm>
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

template <typename scalar_t>
int64_t run(const scalar_t* first, const std::vector<ConvInput>& ins, int64_t N, int64_t Ho, int64_t Wo,
            int64_t C, const scalar_t* thr, int64_t T, int64_t k0, int64_t T_v, int64_t max_d, int8_t* out) {
  const int64_t R = N * Ho * Wo, nb = std::max<int64_t>(T_v - k0, 1);
  int64_t sat = 0;
#pragma omp parallel reduction(+ : sat)
  {
    std::vector<scalar_t> bins(nb * C);
#pragma omp for schedule(dynamic, 16)
    for (int64_t m = 0; m < R; ++m) {
      std::fill(bins.begin(), bins.end(), scalar_t(0));
      const int64_t n = m / (Ho * Wo), oy = (m / Wo) % Ho, ox = m % Wo;
      for (const ConvInput& in : ins) {
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
              const scalar_t* wr = wk + (int64_t)in.ch[j] * C;
              scalar_t* h = bins.data() + (int64_t)(in.bin[j] - k0 - 1) * C;
#pragma omp simd
              for (int64_t k = 0; k < C; ++k) h[k] += wr[k] * v;
            }
          }
        }
      }
      for (int64_t k = 0; k < C; ++k) {
        scalar_t P = first[m * C + k];
        int64_t r = k0;  // virtual phases added so far
        int8_t fired = 0;
        for (int64_t t = 1; t <= T; ++t) {
          for (const int64_t upto = std::min(t + max_d, T_v); r < upto; ++r) P += bins[(r - k0) * C + k];
          if (P >= thr[t - 1]) {
            fired = (int8_t)t;
            break;
          }
        }
        for (; r < T_v; ++r) P += bins[(r - k0) * C + k];  // the final potential, for the saturation count
        out[m * C + k] = fired;
        sat += P > scalar_t(1);
      }
    }
  }
  return sat;
}

}  // namespace

// first: [N, Ho, Wo, C] early potentials; per input i: late_ptr[i], late_ch[i], late_bin[i], late_val[i],
// weight[i] ([kh, kw, Cin, C]) and geom[8 i .. 8 i + 7] = H, W, stride (2), padding (2), dilation (2).
// Returns the fire phases [N, Ho, Wo, C] (int8) and the number of neurons whose final potential exceeds 1.
std::vector<torch::Tensor> conv_exact(torch::Tensor first, std::vector<torch::Tensor> late_ptr,
                                      std::vector<torch::Tensor> late_ch, std::vector<torch::Tensor> late_bin,
                                      std::vector<torch::Tensor> late_val, std::vector<torch::Tensor> weight,
                                      std::vector<int64_t> geom, torch::Tensor thr, int64_t k0, int64_t T_v,
                                      int64_t max_d) {
  TORCH_CHECK(first.dim() == 4 && first.is_contiguous(), "conv_exact: first must be a contiguous [N, Ho, Wo, C]");
  const int64_t N = first.size(0), Ho = first.size(1), Wo = first.size(2), C = first.size(3), T = thr.numel();
  const size_t n_in = weight.size();
  TORCH_CHECK(late_ptr.size() == n_in && late_ch.size() == n_in && late_bin.size() == n_in &&
                  late_val.size() == n_in && geom.size() == 8 * n_in,
              "conv_exact: one late list, weight and geometry per input");
  TORCH_CHECK(T <= 127 && k0 >= 0 && T_v > k0 && max_d >= 0, "conv_exact: bad phase arguments");
  TORCH_CHECK(thr.scalar_type() == first.scalar_type(), "conv_exact: thresholds and potentials differ in dtype");
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
  auto out = torch::zeros({N, Ho, Wo, C}, torch::kInt8);
  int64_t sat = 0;
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "conv_exact", [&] {
    sat = run<scalar_t>(first.data_ptr<scalar_t>(), ins, N, Ho, Wo, C, thr.data_ptr<scalar_t>(), T, k0, T_v,
                        max_d, out.data_ptr<int8_t>());
  });
  return {out, torch::tensor(sat)};
}

void register_conv_exact(pybind11::module_& m) {
  m.def("conv_exact", &conv_exact, "exact-mode one-spike convolution layer, late spikes on im2col rows");
}
