// CPU kernel of one JBU propagation step with the bicubic x2 folded into the filters.
//
// The step is out = adaptive_conv(pad(bicubic_x2(src)), K): a d x d kernel per output pixel
// over the reflect-padded x2 grid. Bicubic x2 reads 4 source pixels per axis, so the d
// upsampled rows an output row Y reads come from E source rows starting at Y/2 (E = 9 for
// d = 11, 7 for d = 7), with weights row_taps[Y] ([d, E], built by the caller from the
// interpolation and padding matrices, borders included). The same holds for columns, so
//   out[c, Y, X] = sum_{a, e < E} F[a, e] src[c, Y/2 + a, X/2 + e],
//   F = row_taps[Y]^T K[Y, X] col_taps[X]                              ([E, E]),
// 81 multiply-adds per channel instead of 121 plus the upsampling, and the x2 grid is never
// written.
//
// A task is one source row m, so the two output rows 2m and 2m + 1: it first builds the
// fused filters of both rows (shared by every channel: about a quarter of the time at the
// last SimFeatUp step, 196 channels) into a buffer laid out as [row][column group][a * E + e][column phase][lane], then runs
// the channels over them. A tile is CB channels x 2 rows x 2L columns, L source columns
// (one vector) per column phase: output columns 2x and 2x + 1 read the same source column,
// so each input vector loaded feeds 4 filter vectors. Phases are interleaved on the store.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "adaptive_conv.h"
#include "adaptive_conv_cpu.h"

namespace {

template <typename scalar_t, int E>
struct Fused {
  static constexpr int L = 32 / sizeof(scalar_t);  // lanes of one 32-byte vector
  typedef scalar_t vec __attribute__((vector_size(32)));
  typedef scalar_t uvec __attribute__((vector_size(32), aligned(alignof(scalar_t))));
  struct Vec {  // std::vector<vec> would drop the vector attribute (a template argument)
    vec v;
  };
  struct Span {  // the taps [lo, hi) that are not zero: bicubic reads 4 of the E source rows
    int lo = 0, hi = 0;
  };

  // spans[e] over the d taps of taps[i * stride + e]
  static void nonzero_spans(const scalar_t* taps, int d, int64_t stride, Span* spans) {
    for (int e = 0; e < E; ++e) {
      Span span{d, 0};
      for (int i = 0; i < d; ++i)
        if (taps[i * stride + e] != 0) span = Span{std::min(span.lo, i), i + 1};
      spans[e] = span.lo < span.hi ? span : Span{};
    }
  }

  // filters of output row Y's column group g: fbuf[(a * E + e) * 2 + q] holds lane l's
  // F[a, e] for output column 2 (g L + l) + q
  static void build(const scalar_t* K, int d, const scalar_t* row_taps, const Span* row_spans,
                    const Vec* col_packed, const Span* col_spans, int64_t g, int64_t w,
                    scalar_t* fbuf, std::vector<Vec>& kt, std::vector<Vec>& t) {
    const int dd = d * d;
    for (int q = 0; q < 2; ++q) {
      for (int ij = 0; ij < dd; ++ij) kt[ij].v = vec{};
      for (int l = 0; l < L; ++l) {
        const int64_t x = g * L + l;
        if (x >= w) break;
        const scalar_t* k = K + (2 * x + q) * dd;
        for (int ij = 0; ij < dd; ++ij) kt[ij].v[l] = k[ij];
      }
      // t[i, e] = sum_j K[i, j] col_taps[j, e] (per lane), then F[a, e] = sum_i row_taps[i, a] t[i, e]
      const Vec* cols = col_packed + (g * 2 + q) * d * E;
      const Span* cspan = col_spans + (g * 2 + q) * E;
      for (int i = 0; i < d; ++i)
        for (int e = 0; e < E; ++e) {
          vec acc{};
          for (int j = cspan[e].lo; j < cspan[e].hi; ++j) acc += kt[i * d + j].v * cols[j * E + e].v;
          t[i * E + e].v = acc;
        }
      for (int a = 0; a < E; ++a)
        for (int e = 0; e < E; ++e) {
          vec acc{};
          for (int i = row_spans[a].lo; i < row_spans[a].hi; ++i) acc += row_taps[i * E + a] * t[i * E + e].v;
          *reinterpret_cast<vec*>(fbuf + ((a * E + e) * 2 + q) * L) = acc;
        }
    }
  }

  // CB channels of output rows 2m, 2m + 1 at column group g
  template <int CB>
  static void tile(const scalar_t* const src[CB], int64_t s_w, const scalar_t* f0, const scalar_t* f1,
                   scalar_t* const out[CB], int64_t out_w, int64_t g, int64_t w) {
    vec acc[2][2][CB] = {};
    for (int a = 0; a < E; ++a) {
      // the next tile's columns: more row streams than the hardware prefetcher follows
      for (int k = 0; k < CB; ++k) __builtin_prefetch(src[k] + a * s_w + L + E + 8);
      for (int e = 0; e < E; ++e) {
        vec in[CB];
        for (int k = 0; k < CB; ++k) in[k] = *reinterpret_cast<const uvec*>(src[k] + a * s_w + e);
        const int off = (a * E + e) * 2 * L;
        for (int q = 0; q < 2; ++q) {
          const vec v0 = *reinterpret_cast<const vec*>(f0 + off + q * L);
          for (int k = 0; k < CB; ++k) acc[0][q][k] += v0 * in[k];
          const vec v1 = *reinterpret_cast<const vec*>(f1 + off + q * L);
          for (int k = 0; k < CB; ++k) acc[1][q][k] += v1 * in[k];
        }
      }
    }
    const int lanes = (int)std::min<int64_t>(L, w - g * L);
    for (int p = 0; p < 2; ++p)
      for (int k = 0; k < CB; ++k) {
        scalar_t* o = out[k] + p * out_w + 2 * g * L;
        for (int l = 0; l < lanes; ++l) {
          o[2 * l] = acc[p][0][k][l];
          o[2 * l + 1] = acc[p][1][k][l];
        }
      }
  }

  // src [B, C, Hs, Ws] (the source, zero-padded so that source row/column Y/2 + a - P is at
  // Y/2 + a), K [B, 2h, 2w, d, d], row_taps [2h, d, E], col_taps [2w, d, E] -> out [B, C, 2h, 2w]
  static void run(const at::Tensor& src, const at::Tensor& K, const at::Tensor& row_taps,
                  const at::Tensor& col_taps, at::Tensor& out) {
    constexpr int CB = 2;
    constexpr int64_t GROUP = 8 * CB;  // channels that reuse a column group's filters from L1
    const int64_t B = src.size(0), C = src.size(1), s_h = src.size(2), s_w = src.size(3);
    const int64_t H2 = K.size(1), W2 = K.size(2), h = H2 / 2, w = W2 / 2;
    const int d = (int)K.size(3), dd = d * d;
    const int64_t groups = (w + L - 1) / L, fsize = (int64_t)E * E * 2 * L;
    // col_taps as [group][phase][j][e][lane] vectors (zero beyond the last column)
    std::vector<Vec> col_packed(groups * 2 * d * E);
    const scalar_t* ct = col_taps.data_ptr<scalar_t>();
    for (int64_t g = 0; g < groups; ++g)
      for (int q = 0; q < 2; ++q)
        for (int j = 0; j < d; ++j)
          for (int e = 0; e < E; ++e) {
            vec v{};
            for (int l = 0; l < L; ++l) {
              const int64_t x = g * L + l;
              if (x < w) v[l] = ct[((2 * x + q) * d + j) * E + e];
            }
            col_packed[((g * 2 + q) * d + j) * E + e].v = v;
          }
    std::vector<Span> col_spans(groups * 2 * E);
    for (int64_t g = 0; g < groups; ++g)
      for (int q = 0; q < 2; ++q) {
        Span* spans = col_spans.data() + (g * 2 + q) * E;
        for (int l = 0; l < L && g * L + l < w; ++l) {
          Span lane[E];
          nonzero_spans(ct + (2 * (g * L + l) + q) * d * E, d, E, lane);
          for (int e = 0; e < E; ++e) {
            if (lane[e].lo == lane[e].hi) continue;
            spans[e] = spans[e].lo < spans[e].hi
                           ? Span{std::min(spans[e].lo, lane[e].lo), std::max(spans[e].hi, lane[e].hi)}
                           : lane[e];
          }
        }
      }
    const scalar_t* s_ptr = src.data_ptr<scalar_t>();
    const scalar_t* k_ptr = K.data_ptr<scalar_t>();
    const scalar_t* r_ptr = row_taps.data_ptr<scalar_t>();
    scalar_t* o_ptr = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * h, 1, [&](int64_t begin, int64_t end) {
      std::vector<Vec> fvec(2 * groups * fsize / L), kt(dd), t(d * E);
      scalar_t* fbuf = reinterpret_cast<scalar_t*>(fvec.data());
      for (int64_t task = begin; task < end; ++task) {
        const int64_t m = task % h, b = task / h;
        for (int p = 0; p < 2; ++p) {
          const int64_t y = 2 * m + p;
          Span row_spans[E];
          nonzero_spans(r_ptr + y * d * E, d, E, row_spans);
          for (int64_t g = 0; g < groups; ++g)
            build(k_ptr + (b * H2 + y) * W2 * dd, d, r_ptr + y * d * E, row_spans, col_packed.data(),
                  col_spans.data(), g, w, fbuf + (p * groups + g) * fsize, kt, t);
        }
        for (int64_t c0 = 0; c0 < C; c0 += GROUP) {
          const int64_t c1 = std::min(c0 + GROUP, C);
          for (int64_t g = 0; g < groups; ++g) {
            const scalar_t* f0 = fbuf + g * fsize;
            const scalar_t* f1 = fbuf + (groups + g) * fsize;
            for (int64_t c = c0; c < c1;) {
              const int n = c + CB <= c1 ? CB : 1;
              const scalar_t* s[CB];
              scalar_t* o[CB];
              for (int k = 0; k < n; ++k) {
                s[k] = s_ptr + ((b * C + c + k) * s_h + m) * s_w + g * L;
                o[k] = o_ptr + ((b * C + c + k) * H2 + 2 * m) * W2;
              }
              if (n == CB) tile<CB>(s, s_w, f0, f1, o, W2, g, w);
              else tile<1>(s, s_w, f0, f1, o, W2, g, w);
              c += n;
            }
          }
        }
      }
    });
  }
};

}  // namespace

// out [B, C, 2h, 2w] = adaptive_conv(pad_r(bicubic_x2(source)), filters), from the source
// zero-padded as `src` [B, C, Hs, Ws] and the per-row/column tap matrices (see above).
at::Tensor bicubic_conv(const at::Tensor& src, const at::Tensor& filters, const at::Tensor& row_taps,
                        const at::Tensor& col_taps) {
  const char* op = "adaptive_conv_cpu.bicubic_conv";
  TORCH_CHECK(src.device().is_cpu() && filters.device().is_cpu() && row_taps.device().is_cpu() &&
                  col_taps.device().is_cpu(), op, ": CPU tensors needed");
  TORCH_CHECK(src.dim() == 4 && filters.dim() == 5 && row_taps.dim() == 3 && col_taps.dim() == 3, op,
              ": src must be [B, C, Hs, Ws], filters [B, 2h, 2w, d, d], row_taps [2h, d, E], col_taps "
              "[2w, d, E]");
  TORCH_CHECK(src.scalar_type() == at::kFloat || src.scalar_type() == at::kDouble, op,
              ": float32 or float64 needed, got ", src.scalar_type());
  const int64_t H2 = filters.size(1), W2 = filters.size(2), d = filters.size(3), E = row_taps.size(2);
  TORCH_CHECK(H2 % 2 == 0 && W2 % 2 == 0 && filters.size(4) == d && src.size(0) == filters.size(0), op,
              ": filters must be [B, 2h, 2w, d, d] for src's B, got ", filters.sizes());
  TORCH_CHECK(row_taps.size(0) == H2 && row_taps.size(1) == d && col_taps.size(0) == W2 &&
                  col_taps.size(1) == d && col_taps.size(2) == E, op, ": row_taps must be [2h, d, E] = [",
              H2, ", ", d, ", E] and col_taps [2w, d, E] = [", W2, ", ", d, ", E], got ", row_taps.sizes(),
              " and ", col_taps.sizes());
  TORCH_CHECK(E == 7 || E == 9, op, ": E must be 7 or 9, got ", E);
  const int64_t lanes = 32 / src.element_size(), groups = (W2 / 2 + lanes - 1) / lanes;
  TORCH_CHECK(src.size(2) >= H2 / 2 + E - 1 && src.size(3) >= groups * lanes + E - 1, op,
              ": src must be at least [", H2 / 2 + E - 1, ", ", groups * lanes + E - 1, "], got ",
              src.sizes());
  for (const auto* t : {&filters, &row_taps, &col_taps})
    adaptive_conv::check_like(*t, "filters and taps", src, "src", op);
  TORCH_CHECK(src.is_contiguous(), op, ": src must be contiguous");
  auto out = at::empty({src.size(0), src.size(1), H2, W2}, src.options());
  advise_huge_pages(out);
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "adaptive_conv_cpu_bicubic_conv", [&] {
    if (E == 9) Fused<scalar_t, 9>::run(src, filters, row_taps, col_taps, out);
    else Fused<scalar_t, 7>::run(src, filters, row_taps, col_taps, out);
  });
  return out;
}
