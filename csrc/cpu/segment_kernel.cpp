// segment_gather_mul: out[r] = sum_{s in [ptr[r], ptr[r+1])} a[src[s]] * b[s], without forming a[src].
//
// Forward and the gradient w.r.t. b run one segment per task; the gradient w.r.t. a, a scatter onto
// the gathered rows, runs over the transposed CSR (entries grouped by src), so no task writes where
// another does and the sums have a fixed order: the same bits for any number of threads.
#include <ATen/Parallel.h>

#include "cpu/kernels.h"
#include "cpu/output_buffer.h"
#include "cpu/vec_math.h"

namespace pamnet_fast {
namespace cpu {

namespace {

template <typename scalar_t>
__attribute__((always_inline)) inline void mul_add_row(scalar_t* __restrict out,
                                                       const scalar_t* __restrict x,
                                                       const scalar_t* __restrict y, int64_t n) {
  for (int64_t f = 0; f < n; ++f) out[f] += x[f] * y[f];
}

template <typename scalar_t>
__attribute__((always_inline)) inline void mul_row(scalar_t* __restrict out,
                                                   const scalar_t* __restrict x,
                                                   const scalar_t* __restrict y, int64_t n) {
  for (int64_t f = 0; f < n; ++f) out[f] = x[f] * y[f];
}

// out[r] (+)= sum over the entries t of row r of x[xi[t]] * y[yi[t]]; xi/yi nullptr means identity.
template <typename scalar_t>
__attribute__((always_inline)) inline void gather_mul_sum(
    scalar_t* out, const scalar_t* x, const int64_t* xi, const scalar_t* y, const int64_t* yi,
    const int64_t* ptr, int64_t row_begin, int64_t row_end, int64_t F) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    scalar_t* o = out + r * F;
    for (int64_t f = 0; f < F; ++f) o[f] = scalar_t(0);
    for (int64_t t = ptr[r]; t < ptr[r + 1]; ++t) {
      const int64_t xr = xi ? xi[t] : t;
      const int64_t yr = yi ? yi[t] : t;
      mul_add_row(o, x + xr * F, y + yr * F, F);
    }
  }
}

PAMNET_FAST_VECTOR_CLONES void gather_mul_sum_f(float* out, const float* x, const int64_t* xi,
                                                const float* y, const int64_t* yi,
                                                const int64_t* ptr, int64_t b, int64_t e, int64_t F) {
  gather_mul_sum(out, x, xi, y, yi, ptr, b, e, F);
}

PAMNET_FAST_VECTOR_CLONES void gather_mul_sum_d(double* out, const double* x, const int64_t* xi,
                                                const double* y, const int64_t* yi,
                                                const int64_t* ptr, int64_t b, int64_t e, int64_t F) {
  gather_mul_sum(out, x, xi, y, yi, ptr, b, e, F);
}

// grad_b[s] = grad_out[r] * a[src[s]] for every entry s of row r.
template <typename scalar_t>
__attribute__((always_inline)) inline void expand_mul(scalar_t* gb, const scalar_t* go, const scalar_t* a,
                                                      const int64_t* src, const int64_t* ptr,
                                                      int64_t row_begin, int64_t row_end, int64_t F) {
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t s = ptr[r]; s < ptr[r + 1]; ++s) mul_row(gb + s * F, go + r * F, a + src[s] * F, F);
}

PAMNET_FAST_VECTOR_CLONES void expand_mul_f(float* gb, const float* go, const float* a,
                                            const int64_t* src, const int64_t* ptr, int64_t b,
                                            int64_t e, int64_t F) {
  expand_mul(gb, go, a, src, ptr, b, e, F);
}
PAMNET_FAST_VECTOR_CLONES void expand_mul_d(double* gb, const double* go, const double* a,
                                            const int64_t* src, const int64_t* ptr, int64_t b,
                                            int64_t e, int64_t F) {
  expand_mul(gb, go, a, src, ptr, b, e, F);
}

}  // namespace

// Rows per task so that each task touches about this many entries x features.
int64_t grain_for(int64_t rows, int64_t entries, int64_t features) {
  const int64_t work_per_row = std::max<int64_t>(1, (entries / std::max<int64_t>(rows, 1) + 1) * features);
  return std::max<int64_t>(1, 32768 / work_per_row);
}

std::tuple<at::Tensor, at::Tensor> transpose_csr(const at::Tensor& src, int64_t num_rows) {
  // Stable counting sort: sequential, O(S + M), deterministic by construction.
  const int64_t S = src.numel();
  auto tptr = at::zeros({num_rows + 1}, src.options().dtype(at::kLong));
  auto perm = at::empty({S}, src.options().dtype(at::kLong));
  const int64_t* s = src.data_ptr<int64_t>();
  int64_t* tp = tptr.data_ptr<int64_t>();
  int64_t* pm = perm.data_ptr<int64_t>();
  for (int64_t i = 0; i < S; ++i) ++tp[s[i] + 1];
  for (int64_t m = 0; m < num_rows; ++m) tp[m + 1] += tp[m];
  std::vector<int64_t> fill(tp, tp + num_rows);
  for (int64_t i = 0; i < S; ++i) pm[fill[s[i]]++] = i;
  return {perm, tptr};
}

// The row (segment) of each entry: rows[s] = r for s in [ptr[r], ptr[r+1]).
at::Tensor segment_rows(const at::Tensor& ptr, int64_t entries) {
  auto rows = at::empty({entries}, ptr.options());
  const int64_t* p = ptr.data_ptr<int64_t>();
  int64_t* out = rows.data_ptr<int64_t>();
  const int64_t R = ptr.numel() - 1;
  at::parallel_for(0, R, grain_for(R, entries, 1), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t s = p[r]; s < p[r + 1]; ++s) out[s] = r;
  });
  return rows;
}

at::Tensor segment_gather_mul_kernel(const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
                                     const at::Tensor& ptr) {
  const int64_t R = ptr.numel() - 1, F = a.size(1), S = b.size(0);
  auto out = empty_output({R, F}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "segment_gather_mul", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const int64_t* sp = src.data_ptr<int64_t>();
    const int64_t* pp = ptr.data_ptr<int64_t>();
    at::parallel_for(0, R, grain_for(R, S, F), [&](int64_t begin, int64_t end) {
      call_for<scalar_t>(gather_mul_sum_f, gather_mul_sum_d, o, ap, sp, bp, nullptr, pp, begin, end, F);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_gather_mul_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
    const at::Tensor& ptr, bool need_a, bool need_b) {
  const int64_t R = ptr.numel() - 1, F = a.size(1), S = b.size(0), M = a.size(0);
  at::Tensor grad_a = need_a ? empty_output_like(a) : at::empty({0}, a.options());
  at::Tensor grad_b = need_b ? empty_output_like(b) : at::empty({0}, b.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "segment_gather_mul_backward", [&] {
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const int64_t* sp = src.data_ptr<int64_t>();
    const int64_t* pp = ptr.data_ptr<int64_t>();
    if (need_b) {
      scalar_t* gb = grad_b.data_ptr<scalar_t>();
      at::parallel_for(0, R, grain_for(R, S, F), [&](int64_t begin, int64_t end) {
        call_for<scalar_t>(expand_mul_f, expand_mul_d, gb, go, ap, sp, pp, begin, end, F);
      });
    }
    if (need_a) {
      // grad_a[m] = sum over entries s with src[s] = m of grad_out[row(s)] * b[s].
      auto [perm, tptr] = transpose_csr(src, M);
      auto rows = segment_rows(ptr, S).index_select(0, perm);
      scalar_t* ga = grad_a.data_ptr<scalar_t>();
      const int64_t* rp = rows.data_ptr<int64_t>();
      const int64_t* pm = perm.data_ptr<int64_t>();
      const int64_t* tp = tptr.data_ptr<int64_t>();
      at::parallel_for(0, M, grain_for(M, S, F), [&](int64_t begin, int64_t end) {
        call_for<scalar_t>(gather_mul_sum_f, gather_mul_sum_d, ga, go, rp, bp, pm, tp, begin, end, F);
      });
    }
  });
  return {grad_a, grad_b};
}

}  // namespace cpu
}  // namespace pamnet_fast
