// The CPU extension's entry points, defined in adaptive_conv_cpu.cpp and bicubic_conv_cpu.cpp
// and bound to Python in cpu_module.cpp.
#pragma once
#include <ATen/core/Tensor.h>

// Writes every element of `out` [B, C, H, W] (never accumulates into it).
at::Tensor forward_out(const at::Tensor& input, const at::Tensor& filters, at::Tensor out);
// out [B, C, H, W] = adaptive_conv(input [B, C, H+d-1, W+d-1], filters [B, H, W, d, d]).
at::Tensor forward(const at::Tensor& input, const at::Tensor& filters);
// grad_in [B, C, H+d-1, W+d-1] from grad_out [B, C, H, W] and filters.
at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& filters);
// [B, H, W, d, d] = sum_c grad_out[b, c, y, x] * input[b, c, y+i, x+j].
at::Tensor grad_filters(const at::Tensor& grad_out, const at::Tensor& input);
// [B, C, 2h, 2w] = adaptive_conv(pad(bicubic_x2(source)), filters) from the padded source and
// the row and column tap matrices [2h|2w, d, E].
at::Tensor bicubic_conv(const at::Tensor& src, const at::Tensor& filters, const at::Tensor& row_taps,
                        const at::Tensor& col_taps);
// Asks the kernel for transparent huge pages under a fresh output buffer.
void advise_huge_pages(const at::Tensor& t);
