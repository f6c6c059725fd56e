// Python bindings of the CPU extension, in a file of their own so that the kernels' files
// include ATen's light headers only. torch/csrc/utils/pybind.h is where pybind11's caster for
// at::Tensor is defined: <torch/extension.h>, which includes it with the whole C++ API, took
// 38 s of compiler time for this file instead of 9.
#include <torch/csrc/utils/pybind.h>

#include "adaptive_conv_cpu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "segearth_ov adaptive convolution, CPU (C++/OpenMP)";
  m.def("forward_out", &forward_out, "adaptive_conv into a preallocated out [B,C,H,W]");
  m.def("forward", &forward, "out = adaptive_conv(input [B,C,H+d-1,W+d-1], filters [B,H,W,d,d])");
  m.def("grad_input", &grad_input, "grad of input [B,C,H+d-1,W+d-1] from grad_out [B,C,H,W] and filters");
  m.def("grad_filters", &grad_filters, "[B,H,W,d,d] = sum_c grad_out[b,c,y,x] * input[b,c,y+i,x+j]");
  m.def("bicubic_conv", &bicubic_conv,
        "[B,C,2h,2w] = adaptive_conv(pad(bicubic_x2(source)), filters [B,2h,2w,d,d]) from the padded "
        "source and the row and column tap matrices [2h|2w, d, E]");
}
