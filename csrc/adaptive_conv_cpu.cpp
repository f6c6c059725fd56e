// CPU kernels of the adaptive convolution (forward, grad-input, grad-filter).
//
// All three reduce to the same register-tiled loop: a tile of TX output columns for CB
// channels (or CB kernel columns) is accumulated in registers over the d*d offsets, so each
// filter value loaded is reused CB times and the inner loop is contiguous and vectorisable.
// Filters are first transposed to [B, d, d, H, W] so that loads along x are contiguous.
// Parallelism: at::parallel_for over independent output rows (torch's OpenMP pool, so
// torch.set_num_threads applies). float32 and float64 run natively; half and bfloat16
// are computed in float32 and cast back.
#include <ATen/Parallel.h>

#include "adaptive_conv.h"

namespace {

constexpr int TX = 16;  // output columns per register tile

// acc[cb][t] += a[cb][t] * k[t] over the d*d offsets, for one output row segment.
//   a(cb, i, j): pointer to the A operand row for channel cb at offset (i, j)
//   k(i, j):     pointer to the kernel row at offset (i, j)
template <typename scalar_t, int CB, int W, typename APtr, typename KPtr>
inline void tile(int d, APtr a, KPtr k, scalar_t* out[CB]) {
  scalar_t acc[CB][W] = {};
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      const scalar_t* kp = k(i, j);
#pragma GCC unroll 8
      for (int cb = 0; cb < CB; ++cb) {
        const scalar_t* ap = a(cb, i, j);
#pragma omp simd
        for (int t = 0; t < W; ++t) acc[cb][t] += ap[t] * kp[t];
      }
    }
  }
  for (int cb = 0; cb < CB; ++cb)
    for (int t = 0; t < W; ++t) out[cb][t] = acc[cb][t];
}

// Generic-width tail (fewer than TX columns left).
template <typename scalar_t, int CB, typename APtr, typename KPtr>
inline void tail(int d, int width, APtr a, KPtr k, scalar_t* out[CB]) {
  scalar_t acc[CB][TX] = {};
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const scalar_t* kp = k(i, j);
      for (int cb = 0; cb < CB; ++cb) {
        const scalar_t* ap = a(cb, i, j);
        for (int t = 0; t < width; ++t) acc[cb][t] += ap[t] * kp[t];
      }
    }
  for (int cb = 0; cb < CB; ++cb)
    for (int t = 0; t < width; ++t) out[cb][t] = acc[cb][t];
}

// out[b, c, y, x] = sum_{i,j} A[b, c, y+i, x+j] * K(b, i, j, y, x) for all x of one row and
// CB channels, where K(b,i,j,y,x) = kt[b, ki(i), kj(j), y + (shift ? i : 0), x + (shift ? j : 0)].
// forward:    A = padded input,  kt = filters^T,             shift = false
// grad-input: A = padded grad,   kt = padded filters^T flipped, shift = true
template <typename scalar_t, int CB>
void correlate_row(const scalar_t* A, int64_t a_plane, int64_t a_w,   // A channel plane, row stride
                   const scalar_t* kt, int64_t k_plane, int64_t k_w,  // kt offset plane, row stride
                   scalar_t* out, int64_t out_plane, int64_t width,   // out channel plane, columns
                   int64_t y, int d, bool shift) {
  for (int64_t x0 = 0; x0 < width; x0 += TX) {
    auto a = [&](int cb, int i, int j) { return A + cb * a_plane + (y + i) * a_w + x0 + j; };
    auto k = [&](int i, int j) {
      const int64_t off = shift ? (int64_t)(d - 1 - i) * d + (d - 1 - j) : (int64_t)i * d + j;
      return kt + off * k_plane + (y + (shift ? i : 0)) * k_w + x0 + (shift ? j : 0);
    };
    scalar_t* o[CB];
    for (int cb = 0; cb < CB; ++cb) o[cb] = out + cb * out_plane + y * width + x0;
    if (x0 + TX <= width)
      tile<scalar_t, CB, TX>(d, a, k, o);
    else
      tail<scalar_t, CB>(d, (int)(width - x0), a, k, o);
  }
}

template <typename scalar_t>
void correlate(const at::Tensor& A, const at::Tensor& kt, at::Tensor& out, bool shift) {
  // A [B, C, OH+d-1, OW+d-1], kt [B, d, d, KH, KW], out [B, C, OH, OW]
  constexpr int CB = 4;
  const int64_t B = A.size(0), C = A.size(1), OH = out.size(2), OW = out.size(3);
  const int d = (int)kt.size(1);
  const int64_t a_h = A.size(2), a_w = A.size(3), k_h = kt.size(3), k_w = kt.size(4);
  const int64_t blocks = (C + CB - 1) / CB;
  const scalar_t* a_ptr = A.data_ptr<scalar_t>();
  const scalar_t* k_ptr = kt.data_ptr<scalar_t>();
  scalar_t* o_ptr = out.data_ptr<scalar_t>();
  at::parallel_for(0, B * blocks * OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % OH, block = (task / OH) % blocks, b = task / (OH * blocks);
      const int64_t c0 = block * CB;
      const scalar_t* kb = k_ptr + b * (int64_t)d * d * k_h * k_w;
      for (int64_t c = c0; c < std::min(c0 + CB, C);) {
        const scalar_t* ab = a_ptr + (b * C + c) * a_h * a_w;
        scalar_t* ob = o_ptr + (b * C + c) * OH * OW;
        if (c + CB <= C) {
          correlate_row<scalar_t, CB>(ab, a_h * a_w, a_w, kb, k_h * k_w, k_w, ob, OH * OW, OW, y, d, shift);
          c += CB;
        } else {
          correlate_row<scalar_t, 1>(ab, a_h * a_w, a_w, kb, k_h * k_w, k_w, ob, OH * OW, OW, y, d, shift);
          c += 1;
        }
      }
    }
  });
}

// gkt[b, i, j, y, x] = sum_c G[b, c, y, x] * In[b, c, y+i, x+j], JB kernel columns at a time.
template <typename scalar_t>
void filter_grad(const at::Tensor& G, const at::Tensor& In, at::Tensor& gkt) {
  constexpr int JB = 4;
  const int64_t B = G.size(0), C = G.size(1), H = G.size(2), W = G.size(3);
  const int d = (int)gkt.size(1);
  const int64_t hp = In.size(2), wp = In.size(3);
  const scalar_t* g_ptr = G.data_ptr<scalar_t>();
  const scalar_t* i_ptr = In.data_ptr<scalar_t>();
  scalar_t* k_ptr = gkt.data_ptr<scalar_t>();
  at::parallel_for(0, B * d * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % H, i = (task / H) % d, b = task / (H * d);
      for (int j0 = 0; j0 < d; j0 += JB) {
        const int jn = std::min(JB, d - j0);
        for (int64_t x0 = 0; x0 < W; x0 += TX) {
          const int width = (int)std::min<int64_t>(TX, W - x0);
          scalar_t acc[JB][TX] = {};
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* gp = g_ptr + ((b * C + c) * H + y) * W + x0;
            const scalar_t* ip = i_ptr + ((b * C + c) * hp + y + i) * wp + x0 + j0;
            if (jn == JB && width == TX) {
#pragma GCC unroll 4
              for (int jb = 0; jb < JB; ++jb)
#pragma omp simd
                for (int t = 0; t < TX; ++t) acc[jb][t] += gp[t] * ip[jb + t];
            } else {
              for (int jb = 0; jb < jn; ++jb)
                for (int t = 0; t < width; ++t) acc[jb][t] += gp[t] * ip[jb + t];
            }
          }
          for (int jb = 0; jb < jn; ++jb) {
            scalar_t* kp = k_ptr + (((b * d + i) * d + j0 + jb) * H + y) * W + x0;
            for (int t = 0; t < width; ++t) kp[t] = acc[jb][t];
          }
        }
      }
    }
  });
}

bool needs_float32(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "adaptive_conv_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_floating_point(), "adaptive_conv_cpu: ", name, " must be floating point, got ",
              t.scalar_type());
}

}  // namespace

// Writes every element of `out` (never accumulates into it).
at::Tensor forward_out(const at::Tensor& input, const at::Tensor& filters, at::Tensor out) {
  check_cpu(input, "input");
  check_cpu(filters, "filters");
  adaptive_conv::check_pair(input, filters, "adaptive_conv_cpu.forward");
  adaptive_conv::check_out(out, input, filters, "adaptive_conv_cpu.forward");
  if (needs_float32(input)) {
    auto out32 = at::empty(out.sizes(), out.options().dtype(at::kFloat));
    out.copy_(forward_out(input.to(at::kFloat), filters.to(at::kFloat), out32));
    return out;
  }
  const auto kt = filters.permute({0, 3, 4, 1, 2}).contiguous();  // [B, d, d, H, W]
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "adaptive_conv_cpu_forward",
                             [&] { correlate<scalar_t>(input, kt, out, false); });
  return out;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& filters) {
  check_cpu(input, "input");
  check_cpu(filters, "filters");
  adaptive_conv::check_pair(input, filters, "adaptive_conv_cpu.forward");
  return forward_out(input, filters, at::empty(adaptive_conv::out_shape(input, filters), input.options()));
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& filters) {
  check_cpu(grad_out, "grad_out");
  check_cpu(input, "input");
  check_cpu(filters, "filters");
  adaptive_conv::check_grad(grad_out, input, filters, "adaptive_conv_cpu.backward");
  if (needs_float32(input)) {
    auto grads = backward(grad_out.to(at::kFloat), input.to(at::kFloat), filters.to(at::kFloat));
    return {grads[0].to(input.scalar_type()), grads[1].to(filters.scalar_type())};
  }
  const int64_t d = filters.size(3);
  // Zero padding by d-1 turns the scatter of grad-input into a gather with no bounds checks.
  const auto g_pad = at::constant_pad_nd(grad_out, {d - 1, d - 1, d - 1, d - 1});
  const auto kt_pad = at::constant_pad_nd(filters.permute({0, 3, 4, 1, 2}), {d - 1, d - 1, d - 1, d - 1}).contiguous();
  auto grad_in = at::empty_like(input);
  auto gkt = at::empty({filters.size(0), d, d, filters.size(1), filters.size(2)}, filters.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "adaptive_conv_cpu_backward", [&] {
    correlate<scalar_t>(g_pad, kt_pad, grad_in, true);
    filter_grad<scalar_t>(grad_out, input, gkt);
  });
  return {grad_in, gkt.permute({0, 3, 4, 1, 2}).contiguous()};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "segearth_ov adaptive convolution, CPU (C++/OpenMP)";
  m.def("forward_out", &forward_out, "adaptive_conv into a preallocated out [B,C,H,W]");
  m.def("forward", &forward, "out = adaptive_conv(input [B,C,H+d-1,W+d-1], filters [B,H,W,d,d])");
  m.def("backward", &backward, "(grad_input, grad_filters) from grad_out [B,C,H,W]");
}
