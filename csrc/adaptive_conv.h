// Adaptive convolution: out[b,c,y,x] = sum_{i,j<d} k[b,y,x,i,j] * in[b,c,y+i,x+j].
// Shared argument checks for the CPU and CUDA extensions; every message names the argument.
// ATen's tensor header only: <torch/extension.h> (pybind11 and the whole C++ API) costs about
// 25 s of compiler time in every file that includes it.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <vector>

namespace adaptive_conv {

// Checks shapes, dtypes and devices of (input [B,C,H+d-1,W+d-1], filters [B,H,W,d,d]).
inline void check_pair(const at::Tensor& input, const at::Tensor& filters, const char* op) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be [B, C, H+d-1, W+d-1], got rank ", input.dim());
  TORCH_CHECK(filters.dim() == 5, op, ": filters must be [B, H, W, d, d], got rank ", filters.dim());
  const auto d = filters.size(3);
  TORCH_CHECK(filters.size(4) == d, op, ": filters must be square, got ", d, "x", filters.size(4));
  TORCH_CHECK(d % 2 == 1, op, ": kernel size d must be odd, got ", d);
  TORCH_CHECK(input.size(0) == filters.size(0), op, ": batch mismatch, input has ", input.size(0),
              ", filters has ", filters.size(0));
  TORCH_CHECK(input.size(2) == filters.size(1) + d - 1 && input.size(3) == filters.size(2) + d - 1,
              op, ": input spatial size ", input.size(2), "x", input.size(3),
              " must be filters size plus d-1 = ", filters.size(1) + d - 1, "x", filters.size(2) + d - 1);
  TORCH_CHECK(input.device() == filters.device(), op, ": input is on ", input.device(),
              ", filters on ", filters.device());
  TORCH_CHECK(input.scalar_type() == filters.scalar_type(), op, ": input is ", input.scalar_type(),
              ", filters ", filters.scalar_type());
  TORCH_CHECK(input.is_contiguous(), op, ": input must be contiguous");
  TORCH_CHECK(filters.is_contiguous(), op, ": filters must be contiguous");
}

inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name,
                       const char* op) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), ", ", ref_name, " on ",
              ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " is ", t.scalar_type(), ", ",
              ref_name, " ", ref.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// grad_out [B, C, H, W] with filters [B, H, W, d, d] (grad-input).
inline void check_grad_input(const at::Tensor& grad_out, const at::Tensor& filters, const char* op) {
  TORCH_CHECK(filters.dim() == 5 && filters.size(3) == filters.size(4) && filters.size(3) % 2 == 1, op,
              ": filters must be [B, H, W, d, d] with d odd, got ", filters.sizes());
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == filters.size(0) &&
                  grad_out.size(2) == filters.size(1) && grad_out.size(3) == filters.size(2),
              op, ": grad_out must be [B, C, H, W] with B, H, W of filters ", filters.sizes(), ", got ",
              grad_out.sizes());
  check_like(filters, "filters", grad_out, "grad_out", op);
  check_like(grad_out, "grad_out", grad_out, "grad_out", op);
}

// grad_out [B, C, H, W] with input [B, C, H+d-1, W+d-1] (grad-filters / local correlation).
inline int64_t check_grad_filters(const at::Tensor& grad_out, const at::Tensor& input, const char* op) {
  TORCH_CHECK(input.dim() == 4 && grad_out.dim() == 4, op, ": input and grad_out must be rank 4, got ",
              input.sizes(), " and ", grad_out.sizes());
  const int64_t d = input.size(2) - grad_out.size(2) + 1;
  TORCH_CHECK(input.size(0) == grad_out.size(0) && input.size(1) == grad_out.size(1) && d >= 1 && d % 2 == 1 &&
                  input.size(3) - grad_out.size(3) + 1 == d,
              op, ": input must be [B, C, H+d-1, W+d-1] (d odd) for grad_out [B, C, H, W] = ",
              grad_out.sizes(), ", got ", input.sizes());
  check_like(input, "input", grad_out, "grad_out", op);
  check_like(grad_out, "grad_out", grad_out, "grad_out", op);
  return d;
}

inline std::vector<int64_t> out_shape(const at::Tensor& input, const at::Tensor& filters) {
  return {input.size(0), input.size(1), filters.size(1), filters.size(2)};
}

inline void check_out(const at::Tensor& out, const at::Tensor& input, const at::Tensor& filters,
                      const char* op) {
  TORCH_CHECK(out.sizes() == at::IntArrayRef(out_shape(input, filters)), op, ": out must be [B, C, H, W] = ",
              at::IntArrayRef(out_shape(input, filters)), ", got ", out.sizes());
  TORCH_CHECK(out.device() == input.device() && out.scalar_type() == input.scalar_type(), op,
              ": out must be a ", input.scalar_type(), " tensor on ", input.device(), ", got ",
              out.scalar_type(), " on ", out.device());
  TORCH_CHECK(out.is_contiguous(), op, ": out must be contiguous");
}

}  // namespace adaptive_conv
