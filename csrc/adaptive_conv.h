// Adaptive convolution: out[b,c,y,x] = sum_{i,j<d} k[b,y,x,i,j] * in[b,c,y+i,x+j].
// Shared argument checks for the CPU and CUDA extensions; every message names the argument.
#pragma once
#include <torch/extension.h>

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

inline void check_grad(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& filters,
                       const char* op) {
  check_pair(input, filters, op);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == input.size(0) &&
                  grad_out.size(1) == input.size(1) && grad_out.size(2) == filters.size(1) &&
                  grad_out.size(3) == filters.size(2),
              op, ": grad_out must be [B, C, H, W] = [", input.size(0), ", ", input.size(1), ", ",
              filters.size(1), ", ", filters.size(2), "], got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == input.device(), op, ": grad_out is on ", grad_out.device(),
              ", input on ", input.device());
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type(), op, ": grad_out is ",
              grad_out.scalar_type(), ", input ", input.scalar_type());
  TORCH_CHECK(grad_out.is_contiguous(), op, ": grad_out must be contiguous");
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
