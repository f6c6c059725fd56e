// CPU kernels of the adaptive convolution (forward, grad-input, grad-filters).
//
// float32 forward with d = 3, 7 or 11 (the JBU sizes) runs `correlate_rows`: a tile of
// 4 output rows x 3 channels x 8 columns is accumulated in registers, each input row vector
// loaded feeds every output row of the tile it reaches, and the filters are packed as
// [B, H, W/8, d*d, 8]. Other forwards and grad-input share `correlate`: a tile of TX output
// columns for CB channels over the d*d offsets, filters packed as [B, H, W/TX, d*d, TX];
// grad-input gathers from the zero-padded grad and the flipped, padded filters
// [B, d, d, H+2(d-1), W+2(d-1)]. Both prefetch the next tile's input columns by hand: a tile
// reads dozens of input rows at once, more streams than the hardware prefetcher follows.
// Grad-filters (also the JBU's local correlation) keeps a tile's every kernel column in
// registers over all channels for d = 3, 7, 11 (`filter_grad_tiles`, written in the output's
// own layout), JB columns of a tile in registers otherwise (`filter_grad`), prefetching rows
// of the channels a few planes ahead. Parallelism: at::parallel_for over (row band x channel
// group) or (row x kernel row) tasks, in torch's OpenMP pool, so torch.set_num_threads
// applies. float32 and float64 run natively; half and bfloat16 are computed in float32 and
// cast back.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "adaptive_conv.h"
#include "adaptive_conv_cpu.h"

// A fresh multi-MB buffer is page-faulted in 4 KiB at a time on first write, which at the
// last SimFeatUp step costs a sizeable part of the op. Where the kernel offers transparent
// huge pages on request (the common `madvise` setting), ask for them: 512x fewer faults.
void advise_huge_pages(const at::Tensor& t) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t HUGE = uintptr_t(2) << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (start + HUGE - 1) & ~(HUGE - 1);
  const uintptr_t end = (start + t.numel() * t.element_size()) & ~(HUGE - 1);
  if (end > begin + HUGE) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

namespace {

constexpr int TX = 16;  // output columns per register tile

// One output tile: out[cb][t] = sum_{i,j} a[cb][i * a_w + j + t] * k[i * k_si + j * k_sj + t]
// for CB channels and TX columns. GCC vector types keep the CB x TX accumulators in
// registers (8 AVX2 registers for float); each kernel vector loaded is used CB times.
template <typename scalar_t, int CB>
inline void tile(int d, const scalar_t* const a[CB], int64_t a_w, const scalar_t* k, int64_t k_si,
                 int64_t k_sj, scalar_t* const out[CB]) {
  constexpr int LANES = 32 / sizeof(scalar_t);
  constexpr int NV = TX / LANES;
  typedef scalar_t vec __attribute__((vector_size(32)));
  typedef scalar_t uvec __attribute__((vector_size(32), aligned(alignof(scalar_t))));
  vec acc[CB][NV] = {};
  for (int i = 0; i < d; ++i) {
    const scalar_t* krow = k + i * k_si;
    const int64_t arow = i * a_w;
    // the next tile's input columns: too many row streams for the hardware prefetcher
    for (int cb = 0; cb < CB; ++cb) __builtin_prefetch(a[cb] + arow + TX + d + 8);
    for (int j = 0; j < d; ++j) {
      const scalar_t* kp = krow + j * k_sj;
      vec kv[NV];
      for (int v = 0; v < NV; ++v) kv[v] = *reinterpret_cast<const uvec*>(kp + v * LANES);
      for (int cb = 0; cb < CB; ++cb) {
        const scalar_t* ap = a[cb] + arow + j;
        for (int v = 0; v < NV; ++v) acc[cb][v] += kv[v] * *reinterpret_cast<const uvec*>(ap + v * LANES);
      }
    }
  }
  for (int cb = 0; cb < CB; ++cb)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<uvec*>(out[cb] + v * LANES) = acc[cb][v];
}

// The same for the last, narrower tile of a row (width < TX).
template <typename scalar_t, int CB>
inline void tail(int d, int width, const scalar_t* const a[CB], int64_t a_w, const scalar_t* k,
                 int64_t k_si, int64_t k_sj, scalar_t* const out[CB]) {
  scalar_t acc[CB][TX] = {};
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const scalar_t* kp = k + i * k_si + j * k_sj;
      for (int cb = 0; cb < CB; ++cb) {
        const scalar_t* ap = a[cb] + i * a_w + j;
        for (int t = 0; t < width; ++t) acc[cb][t] += ap[t] * kp[t];
      }
    }
  for (int cb = 0; cb < CB; ++cb)
    for (int t = 0; t < width; ++t) out[cb][t] = acc[cb][t];
}

// Kernel addressing of a correlation: K(b, y, x0 + t, i, j) = base(b, y, x0)[i*si + j*sj + t].
struct KernelLayout {
  int64_t si, sj;
};

template <typename scalar_t, int CB, typename KBase>
inline void correlate_tile(const scalar_t* A, int64_t a_plane, int64_t a_w, scalar_t* out,
                           int64_t out_plane, int64_t width, int64_t b, int64_t y, int64_t x0,
                           int d, const KBase& kbase, KernelLayout kl) {
  const scalar_t* a[CB];
  scalar_t* o[CB];
  for (int cb = 0; cb < CB; ++cb) {
    a[cb] = A + cb * a_plane + y * a_w + x0;
    o[cb] = out + cb * out_plane + y * width + x0;
  }
  if (x0 + TX <= width)
    tile<scalar_t, CB>(d, a, a_w, kbase(b, y, x0), kl.si, kl.sj, o);
  else
    tail<scalar_t, CB>(d, (int)(width - x0), a, a_w, kbase(b, y, x0), kl.si, kl.sj, o);
}

// out [B, C, OH, OW] from A [B, C, OH+d-1, OW+d-1] and the kernel addressed by `kbase`/`kl`.
// Work is cut into (band of output rows) x (group of channels); inside a task the kernel
// values of one (y, x0) tile stay in L1 while every channel block of the group uses them,
// and consecutive rows of a band reuse the overlapping input rows from L2.
template <typename scalar_t, typename KBase>
void correlate(const at::Tensor& A, at::Tensor& out, int d, const KBase& kbase, KernelLayout kl) {
  constexpr int CB = 4;
  constexpr int64_t GROUP = 8 * CB;  // channels per task
  constexpr int64_t BAND = 8;        // output rows per task
  const int64_t B = A.size(0), C = A.size(1), OH = out.size(2), OW = out.size(3);
  const int64_t a_h = A.size(2), a_w = A.size(3);
  const int64_t bands = (OH + BAND - 1) / BAND, groups = (C + GROUP - 1) / GROUP;
  const scalar_t* a_ptr = A.data_ptr<scalar_t>();
  scalar_t* o_ptr = out.data_ptr<scalar_t>();
  at::parallel_for(0, B * bands * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t group = task % groups, y_band = (task / groups) % bands, b = task / (groups * bands);
      const int64_t y1 = std::min((y_band + 1) * BAND, OH), c_end = std::min((group + 1) * GROUP, C);
      for (int64_t y = y_band * BAND; y < y1; ++y) {
        for (int64_t x0 = 0; x0 < OW; x0 += TX) {
          for (int64_t c = group * GROUP; c < c_end;) {
            const scalar_t* ab = a_ptr + (b * C + c) * a_h * a_w;
            scalar_t* ob = o_ptr + (b * C + c) * OH * OW;
            if (c + CB <= c_end) {
              correlate_tile<scalar_t, CB>(ab, a_h * a_w, a_w, ob, OH * OW, OW, b, y, x0, d, kbase, kl);
              c += CB;
            } else {
              correlate_tile<scalar_t, 1>(ab, a_h * a_w, a_w, ob, OH * OW, OW, b, y, x0, d, kbase, kl);
              c += 1;
            }
          }
        }
      }
    }
  });
}


// ---- float32 forward for the JBU kernel sizes (d = 3, 7, 11): row-blocked tiles ----------
// A tile is R output rows x CB channels x FX columns. Input row r of the R + D - 1 rows it
// touches is loaded once per (r, j) and feeds every output row q whose offset i = r - q is
// in [0, D), so loads per FMA drop from 1.25 (one row per tile) to about 0.65. With R and D
// compile-time constants the (r, q) loops unroll and the row conditions vanish.
constexpr int FX = 8;    // columns per tile: one AVX2 float vector
constexpr int FR = 4;    // output rows per tile
constexpr int FCB = 3;   // channels per tile: 12 accumulators + 3 inputs + 1 filter registers

template <int CB, int R, int D>
inline void rows_tile(const float* const a[CB], int64_t a_w, const float* k, int64_t k_row,
                      float* const out[CB], int64_t out_w) {
  typedef float vec __attribute__((vector_size(32)));
  typedef float uvec __attribute__((vector_size(32), aligned(4)));
  vec acc[R][CB] = {};
#pragma GCC unroll 16
  for (int r = 0; r < R + D - 1; ++r) {
    for (int cb = 0; cb < CB; ++cb) __builtin_prefetch(a[cb] + r * a_w + FX + D + 8);
    for (int j = 0; j < D; ++j) {
      vec in[CB];
      for (int cb = 0; cb < CB; ++cb) in[cb] = *reinterpret_cast<const uvec*>(a[cb] + r * a_w + j);
#pragma GCC unroll 4
      for (int q = 0; q < R; ++q) {
        const int i = r - q;
        if (i < 0 || i >= D) continue;
        const vec kv = *reinterpret_cast<const uvec*>(k + q * k_row + (i * D + j) * FX);
        for (int cb = 0; cb < CB; ++cb) acc[q][cb] += kv * in[cb];
      }
    }
  }
  for (int q = 0; q < R; ++q)
    for (int cb = 0; cb < CB; ++cb) *reinterpret_cast<uvec*>(out[cb] + q * out_w) = acc[q][cb];
}

// Columns [x0, OW) of one output row (fewer than FX), from the same packed filters.
inline void rows_tail(int d, int width, const float* a, int64_t a_w, const float* k, float* out) {
  for (int t = 0; t < width; ++t) {
    float acc = 0;
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) acc += k[(i * d + j) * FX + t] * a[i * a_w + j + t];
    out[t] = acc;
  }
}

template <int CB, int R, int D>
inline void rows_block(const float* A, int64_t a_plane, int64_t a_w, const float* K,
                       int64_t k_row, float* O, int64_t o_plane, int64_t OW, int64_t y,
                       int64_t x0) {
  const float* a[CB];
  float* o[CB];
  for (int cb = 0; cb < CB; ++cb) {
    a[cb] = A + cb * a_plane + y * a_w + x0;
    o[cb] = O + cb * o_plane + y * OW + x0;
  }
  rows_tile<CB, R, D>(a, a_w, K + y * k_row + (x0 / FX) * D * D * FX, k_row, o, OW);
}

// out [B, C, OH, OW] from A [B, C, OH+D-1, OW+D-1] and filters packed with width FX.
// Tasks are (band of output rows) x (group of channels); inside, a tile's filters (R x D*D
// x FX floats) stay in L1 while every channel block of the group uses them.
template <int D>
void correlate_rows(const at::Tensor& A, at::Tensor& out, const at::Tensor& packed) {
  constexpr int64_t GROUP = 8 * FCB;
  constexpr int64_t BAND = 4 * FR;
  const int64_t B = A.size(0), C = A.size(1), OH = out.size(2), OW = out.size(3);
  const int64_t a_h = A.size(2), a_w = A.size(3), a_plane = a_h * a_w, o_plane = OH * OW;
  const int64_t tiles = packed.size(2), k_row = tiles * D * D * FX, full = OW / FX * FX;
  const int64_t bands = (OH + BAND - 1) / BAND, groups = (C + GROUP - 1) / GROUP;
  const float* a_ptr = A.data_ptr<float>();
  const float* k_ptr = packed.data_ptr<float>();
  float* o_ptr = out.data_ptr<float>();
  at::parallel_for(0, B * bands * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t group = task % groups, band = (task / groups) % bands, b = task / (groups * bands);
      const int64_t y_end = std::min((band + 1) * BAND, OH), c_end = std::min((group + 1) * GROUP, C);
      const float* K = k_ptr + b * OH * k_row;
      for (int64_t y = band * BAND; y < y_end;) {
        const bool block = y + FR <= y_end;
        for (int64_t x0 = 0; x0 < full; x0 += FX) {
          for (int64_t c = group * GROUP; c < c_end;) {
            const float* Ab = a_ptr + (b * C + c) * a_plane;
            float* Ob = o_ptr + (b * C + c) * o_plane;
            if (c + FCB <= c_end) {
              if (block) rows_block<FCB, FR, D>(Ab, a_plane, a_w, K, k_row, Ob, o_plane, OW, y, x0);
              else rows_block<FCB, 1, D>(Ab, a_plane, a_w, K, k_row, Ob, o_plane, OW, y, x0);
              c += FCB;
            } else {
              if (block) rows_block<1, FR, D>(Ab, a_plane, a_w, K, k_row, Ob, o_plane, OW, y, x0);
              else rows_block<1, 1, D>(Ab, a_plane, a_w, K, k_row, Ob, o_plane, OW, y, x0);
              c += 1;
            }
          }
        }
        const int64_t rows = block ? FR : 1;
        if (full < OW)
          for (int64_t yy = y; yy < y + rows; ++yy)
            for (int64_t c = group * GROUP; c < c_end; ++c)
              rows_tail(D, (int)(OW - full), a_ptr + (b * C + c) * a_plane + yy * a_w + full, a_w,
                        K + yy * k_row + (full / FX) * D * D * FX,
                        o_ptr + (b * C + c) * o_plane + yy * OW + full);
        y += rows;
      }
    }
  });
}

at::Tensor pack_filters(const at::Tensor& filters, int64_t width);

// Whether the row-blocked float kernel has an instantiation for this case.
bool rows_kernel(const at::Tensor& input, const at::Tensor& filters, at::Tensor& out) {
  const int64_t d = filters.size(3);
  if (input.scalar_type() != at::kFloat || (d != 3 && d != 7 && d != 11)) return false;
  const auto packed = pack_filters(filters, FX);
  if (d == 3) correlate_rows<3>(input, out, packed);
  else if (d == 7) correlate_rows<7>(input, out, packed);
  else correlate_rows<11>(input, out, packed);
  return true;
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
            // rows of channel c + 8: a plane apart each, beyond the hardware prefetcher's reach
            __builtin_prefetch(gp + 8 * H * W);
            __builtin_prefetch(gp + 8 * H * W + TX - 1);
            __builtin_prefetch(ip + 8 * hp * wp);
            __builtin_prefetch(ip + 8 * hp * wp + TX + JB - 2);
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

// gk[b, y, x, i, j] = sum_c G[b, c, y, x] * In[b, c, y+i, x+j] for the JBU sizes. A task is
// (b, y, i); a tile is L columns of it, whose D accumulators (one per kernel column j) stay
// in registers over every channel: a multiply-add costs about one load and nothing is
// stored until the tile is done, when its D x L values go straight to [B, H, W, d, d].
template <typename scalar_t, int D>
void filter_grad_tiles(const at::Tensor& G, const at::Tensor& In, at::Tensor& gk) {
  constexpr int L = 32 / sizeof(scalar_t);
  typedef scalar_t vec __attribute__((vector_size(32)));
  typedef scalar_t uvec __attribute__((vector_size(32), aligned(alignof(scalar_t))));
  const int64_t B = G.size(0), C = G.size(1), H = G.size(2), W = G.size(3);
  const int64_t hp = In.size(2), wp = In.size(3), full = W / L * L;
  const scalar_t* g_ptr = G.data_ptr<scalar_t>();
  const scalar_t* i_ptr = In.data_ptr<scalar_t>();
  scalar_t* k_ptr = gk.data_ptr<scalar_t>();
  at::parallel_for(0, B * H * D, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task % D, y = (task / D) % H, b = task / (D * H);
      const scalar_t* gb = g_ptr + (b * C * H + y) * W;
      const scalar_t* ib = i_ptr + (b * C * hp + y + i) * wp;
      scalar_t* kp = k_ptr + (b * H + y) * W * D * D + i * D;
      for (int64_t x0 = 0; x0 < full; x0 += L) {
        vec acc[D] = {};
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* gp = gb + c * H * W + x0;
          const scalar_t* ip = ib + c * hp * wp + x0;
          __builtin_prefetch(ip + 4 * L + D);  // a plane apart per channel: too many streams
          const vec g = *reinterpret_cast<const uvec*>(gp);
#pragma GCC unroll 16
          for (int j = 0; j < D; ++j) acc[j] += g * *reinterpret_cast<const uvec*>(ip + j);
        }
        for (int t = 0; t < L; ++t)
          for (int j = 0; j < D; ++j) kp[(x0 + t) * D * D + j] = acc[j][t];
      }
      for (int64_t x = full; x < W; ++x)
        for (int j = 0; j < D; ++j) {
          scalar_t acc = 0;
          for (int64_t c = 0; c < C; ++c) acc += gb[c * H * W + x] * ib[c * hp * wp + x + j];
          kp[x * D * D + j] = acc;
        }
    }
  });
}

// Filters [B, H, W, d, d] packed as [B, H, W/width, d*d, width] (W zero-padded to whole
// tiles): the d*d x width values one output tile needs are one contiguous block, like a
// packed GEMM operand, instead of d*d rows spread over d*d planes.
at::Tensor pack_filters(const at::Tensor& filters, int64_t width) {
  const int64_t B = filters.size(0), H = filters.size(1), W = filters.size(2), d = filters.size(3);
  const int64_t tiles = (W + width - 1) / width;
  auto f = filters.reshape({B, H, W, d * d});
  if (tiles * width != W) f = at::constant_pad_nd(f, {0, 0, 0, tiles * width - W});
  auto packed = at::empty({B, H, tiles, d * d, width}, filters.options());
  advise_huge_pages(packed);
  packed.copy_(f.view({B, H, tiles, width, d * d}).permute({0, 1, 2, 4, 3}));
  return packed;
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
  if (rows_kernel(input, filters, out)) return out;
  const int d = (int)filters.size(3);
  const int64_t H = filters.size(1), tiles = (filters.size(2) + TX - 1) / TX;
  const auto packed = pack_filters(filters, TX);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "adaptive_conv_cpu_forward", [&] {
    const scalar_t* k = packed.data_ptr<scalar_t>();
    correlate<scalar_t>(input, out, d, [=](int64_t b, int64_t y, int64_t x0) {
      return k + ((b * H + y) * tiles + x0 / TX) * d * d * TX;
    }, KernelLayout{(int64_t)d * TX, TX});
  });
  return out;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& filters) {
  check_cpu(input, "input");
  check_cpu(filters, "filters");
  adaptive_conv::check_pair(input, filters, "adaptive_conv_cpu.forward");
  auto out = at::empty(adaptive_conv::out_shape(input, filters), input.options());
  advise_huge_pages(out);
  return forward_out(input, filters, out);
}

// grad_in [B, C, H+d-1, W+d-1] = sum over the outputs whose window covers each input pixel.
at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& filters) {
  check_cpu(grad_out, "grad_out");
  check_cpu(filters, "filters");
  adaptive_conv::check_grad_input(grad_out, filters, "adaptive_conv_cpu.grad_input");
  if (needs_float32(grad_out))
    return grad_input(grad_out.to(at::kFloat), filters.to(at::kFloat)).to(grad_out.scalar_type());
  const int64_t d = filters.size(3);
  // Zero padding by d-1 turns the scatter into a gather with no bounds checks:
  // grad_in[yy, xx] = sum_{i,j} g_pad[yy+i, xx+j] * kt_pad[d-1-i, d-1-j, yy+i, xx+j]
  const auto g_pad = at::constant_pad_nd(grad_out, {d - 1, d - 1, d - 1, d - 1});
  const auto kt_pad = at::constant_pad_nd(filters.permute({0, 3, 4, 1, 2}), {d - 1, d - 1, d - 1, d - 1}).contiguous();
  const int64_t kh = kt_pad.size(3), kw = kt_pad.size(4), plane = kh * kw;
  auto grad_in = at::empty({grad_out.size(0), grad_out.size(1), filters.size(1) + d - 1, filters.size(2) + d - 1},
                           grad_out.options());
  advise_huge_pages(grad_in);
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "adaptive_conv_cpu_grad_input", [&] {
    const scalar_t* k = kt_pad.data_ptr<scalar_t>();
    correlate<scalar_t>(g_pad, grad_in, (int)d, [=](int64_t b, int64_t y, int64_t x0) {
      return k + ((b * d + d - 1) * d + d - 1) * plane + y * kw + x0;
    }, KernelLayout{kw - d * plane, 1 - plane});
  });
  return grad_in;
}

// [B, H, W, d, d]: sum_c grad_out[b, c, y, x] * input[b, c, y+i, x+j]. This is both the
// filter gradient of the adaptive convolution and the JBU's neighbourhood affinity.
at::Tensor grad_filters(const at::Tensor& grad_out, const at::Tensor& input) {
  check_cpu(grad_out, "grad_out");
  check_cpu(input, "input");
  const int64_t d = adaptive_conv::check_grad_filters(grad_out, input, "adaptive_conv_cpu.grad_filters");
  if (needs_float32(input))
    return grad_filters(grad_out.to(at::kFloat), input.to(at::kFloat)).to(input.scalar_type());
  if (d == 3 || d == 7 || d == 11) {
    auto gk = at::empty({grad_out.size(0), grad_out.size(2), grad_out.size(3), d, d},
                        input.options());
    advise_huge_pages(gk);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "adaptive_conv_cpu_grad_filters_rows", [&] {
      if (d == 3) filter_grad_tiles<scalar_t, 3>(grad_out, input, gk);
      else if (d == 7) filter_grad_tiles<scalar_t, 7>(grad_out, input, gk);
      else filter_grad_tiles<scalar_t, 11>(grad_out, input, gk);
    });
    return gk;
  }
  auto gkt = at::empty({grad_out.size(0), d, d, grad_out.size(2), grad_out.size(3)}, input.options());
  advise_huge_pages(gkt);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "adaptive_conv_cpu_grad_filters",
                             [&] { filter_grad<scalar_t>(grad_out, input, gkt); });
  return gkt.permute({0, 3, 4, 1, 2}).contiguous();
}
