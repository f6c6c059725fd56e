// CUDA kernels of the adaptive convolution (forward, grad-input, grad-filter).
//
// Filters are transposed to [B, d, d, H, W] so neighbouring threads (neighbouring x) read
// neighbouring addresses. A thread owns one pixel and CPT channels, so each filter value it
// loads is reused CPT times. float32, float64, float16 and bfloat16; half types accumulate
// in float32 (at::opmath_type). Grad-input is a gather (no atomics): each input pixel sums
// the outputs whose window covers it.
#include <ATen/OpMathType.h>
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "adaptive_conv.h"

namespace {

constexpr int THREADS = 256;
constexpr int CPT = 8;  // channels per thread

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ in, const scalar_t* __restrict__ kt,
                               scalar_t* __restrict__ out, int C, int H, int W, int d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int pix = blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= H * W) return;
  const int y = pix / W, x = pix % W, b = blockIdx.z, c0 = blockIdx.y * CPT;
  const int hp = H + d - 1, wp = W + d - 1, cn = min(CPT, C - c0);
  const scalar_t* kb = kt + (int64_t)b * d * d * H * W + pix;
  const scalar_t* ib = in + ((int64_t)b * C + c0) * hp * wp + (int64_t)y * wp + x;
  acc_t acc[CPT] = {};
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const acc_t k = static_cast<acc_t>(kb[(int64_t)(i * d + j) * H * W]);
#pragma unroll
      for (int c = 0; c < CPT; ++c)
        if (c < cn) acc[c] += k * static_cast<acc_t>(ib[(int64_t)c * hp * wp + i * wp + j]);
    }
  scalar_t* ob = out + ((int64_t)b * C + c0) * H * W + pix;
#pragma unroll
  for (int c = 0; c < CPT; ++c)
    if (c < cn) ob[(int64_t)c * H * W] = static_cast<scalar_t>(acc[c]);
}

template <typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ kt,
                                  scalar_t* __restrict__ gi, int C, int H, int W, int d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int hp = H + d - 1, wp = W + d - 1;
  const int pix = blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= hp * wp) return;
  const int yy = pix / wp, xx = pix % wp, b = blockIdx.z, c0 = blockIdx.y * CPT;
  const int cn = min(CPT, C - c0);
  const scalar_t* kb = kt + (int64_t)b * d * d * H * W;
  const scalar_t* gb = go + ((int64_t)b * C + c0) * H * W;
  acc_t acc[CPT] = {};
  for (int i = 0; i < d; ++i) {
    const int y = yy - i;
    if (y < 0 || y >= H) continue;
    for (int j = 0; j < d; ++j) {
      const int x = xx - j;
      if (x < 0 || x >= W) continue;
      const acc_t k = static_cast<acc_t>(kb[((int64_t)(i * d + j) * H + y) * W + x]);
#pragma unroll
      for (int c = 0; c < CPT; ++c)
        if (c < cn) acc[c] += k * static_cast<acc_t>(gb[(int64_t)c * H * W + y * W + x]);
    }
  }
  scalar_t* ob = gi + ((int64_t)b * C + c0) * hp * wp + pix;
#pragma unroll
  for (int c = 0; c < CPT; ++c)
    if (c < cn) ob[(int64_t)c * hp * wp] = static_cast<scalar_t>(acc[c]);
}

// gkt[b, i, j, y, x] = sum_c go[b, c, y, x] * in[b, c, y+i, x+j]; a thread owns one
// (b, i, y, x) and all d columns j, so each grad_out value it loads is reused d times.
template <typename scalar_t>
__global__ void grad_filter_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ in,
                                   scalar_t* __restrict__ gkt, int C, int H, int W, int d) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MAX_D = 32;
  const int pix = blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= H * W) return;
  const int y = pix / W, x = pix % W, i = blockIdx.y, b = blockIdx.z;
  const int hp = H + d - 1, wp = W + d - 1;
  acc_t acc[MAX_D] = {};
  for (int c = 0; c < C; ++c) {
    const acc_t g = static_cast<acc_t>(go[((int64_t)b * C + c) * H * W + pix]);
    const scalar_t* row = in + (((int64_t)b * C + c) * hp + y + i) * wp + x;
    for (int j = 0; j < d; ++j) acc[j] += g * static_cast<acc_t>(row[j]);
  }
  for (int j = 0; j < d; ++j)
    gkt[(((int64_t)b * d + i) * d + j) * H * W + pix] = static_cast<scalar_t>(acc[j]);
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "adaptive_conv_cuda: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.is_floating_point(), "adaptive_conv_cuda: ", name, " must be floating point, got ",
              t.scalar_type());
}

dim3 grid(int64_t pixels, int64_t groups, int64_t batch) {
  return dim3((unsigned)((pixels + THREADS - 1) / THREADS), (unsigned)groups, (unsigned)batch);
}

}  // namespace

// Writes every element of `out` (never accumulates into it).
at::Tensor forward_out(const at::Tensor& input, const at::Tensor& filters, at::Tensor out) {
  check_cuda(input, "input");
  check_cuda(filters, "filters");
  adaptive_conv::check_pair(input, filters, "adaptive_conv_cuda.forward");
  adaptive_conv::check_out(out, input, filters, "adaptive_conv_cuda.forward");
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t B = input.size(0), C = input.size(1), H = filters.size(1), W = filters.size(2), d = filters.size(3);
  const auto kt = filters.permute({0, 3, 4, 1, 2}).contiguous();
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "adaptive_conv_cuda_forward", [&] {
    forward_kernel<scalar_t><<<grid(H * W, (C + CPT - 1) / CPT, B), THREADS, 0, stream>>>(
        input.data_ptr<scalar_t>(), kt.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), C, H, W, d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& filters) {
  check_cuda(input, "input");
  check_cuda(filters, "filters");
  adaptive_conv::check_pair(input, filters, "adaptive_conv_cuda.forward");
  return forward_out(input, filters, at::empty(adaptive_conv::out_shape(input, filters), input.options()));
}

at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& filters) {
  check_cuda(grad_out, "grad_out");
  check_cuda(filters, "filters");
  adaptive_conv::check_grad_input(grad_out, filters, "adaptive_conv_cuda.grad_input");
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), C = grad_out.size(1), H = filters.size(1), W = filters.size(2), d = filters.size(3);
  const auto kt = filters.permute({0, 3, 4, 1, 2}).contiguous();
  auto grad_in = at::empty({B, C, H + d - 1, W + d - 1}, grad_out.options());
  if (grad_in.numel() == 0) return grad_in;
  if (grad_out.numel() == 0) return grad_in.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "adaptive_conv_cuda_grad_input", [&] {
    grad_input_kernel<scalar_t><<<grid((H + d - 1) * (W + d - 1), (C + CPT - 1) / CPT, B), THREADS, 0,
                                  c10::cuda::getCurrentCUDAStream()>>>(
        grad_out.data_ptr<scalar_t>(), kt.data_ptr<scalar_t>(), grad_in.data_ptr<scalar_t>(), C, H, W, d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_in;
}

at::Tensor grad_filters(const at::Tensor& grad_out, const at::Tensor& input) {
  check_cuda(grad_out, "grad_out");
  check_cuda(input, "input");
  const int64_t d = adaptive_conv::check_grad_filters(grad_out, input, "adaptive_conv_cuda.grad_filters");
  TORCH_CHECK(d <= 32, "adaptive_conv_cuda.grad_filters: kernel size d must be <= 32, got ", d);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t B = grad_out.size(0), C = grad_out.size(1), H = grad_out.size(2), W = grad_out.size(3);
  auto gkt = at::empty({B, d, d, H, W}, input.options());
  if (gkt.numel() == 0) return gkt.permute({0, 3, 4, 1, 2});
  if (C == 0) return gkt.zero_().permute({0, 3, 4, 1, 2}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "adaptive_conv_cuda_grad_filters", [&] {
    grad_filter_kernel<scalar_t><<<grid(H * W, d, B), THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad_out.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), gkt.data_ptr<scalar_t>(), C, H, W, d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gkt.permute({0, 3, 4, 1, 2}).contiguous();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "segearth_ov adaptive convolution, CUDA";
  m.def("forward_out", &forward_out, "adaptive_conv into a preallocated out [B,C,H,W]");
  m.def("forward", &forward, "out = adaptive_conv(input [B,C,H+d-1,W+d-1], filters [B,H,W,d,d])");
  m.def("grad_input", &grad_input, "grad of input [B,C,H+d-1,W+d-1] from grad_out [B,C,H,W] and filters");
  m.def("grad_filters", &grad_filters, "[B,H,W,d,d] = sum_c grad_out[b,c,y,x] * input[b,c,y+i,x+j]");
}
