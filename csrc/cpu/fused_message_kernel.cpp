// fused_edge_message: out[i] = sum_{e in [ptr[i], ptr[i+1])} silu(p[i] + q[src[e]] + r[k]) * s[k],
// k = edge_row[e] (or e): edges may share their rows of r and s (both directions of a pair).
//
// One target per task, features innermost. The backward recomputes h = p + q + r and the SiLU per
// edge instead of keeping E x F activations; the gradient w.r.t. q (gathered by src) is summed over
// the transposed CSR, so every sum has a fixed order whatever the number of threads.
#include <ATen/Parallel.h>

#include <vector>

#include "cpu/kernels.h"
#include "cpu/output_buffer.h"
#include "cpu/vec_math.h"

namespace pamnet_fast {
namespace cpu {

namespace {

// One edge row: o += silu(pi + qj + re) * se. Restrict-qualified parameters tell GCC the rows do not
// overlap, so the loop vectorizes without runtime alias checks.
template <typename scalar_t>
__attribute__((always_inline)) inline void message_row(scalar_t* __restrict o,
                                                       const scalar_t* __restrict pi,
                                                       const scalar_t* __restrict qj,
                                                       const scalar_t* __restrict re,
                                                       const scalar_t* __restrict se, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t h = (pi[f] + qj[f]) + re[f];
    o[f] += h * sigmoid(h) * se[f];
  }
}

// One edge row of the backward: gh = d out / d h, gs = d out / d s, gp += gh.
template <typename scalar_t>
__attribute__((always_inline)) inline void message_row_backward(
    const scalar_t* __restrict gi, const scalar_t* __restrict pi, const scalar_t* __restrict qj,
    const scalar_t* __restrict re, const scalar_t* __restrict se, scalar_t* __restrict ghe,
    scalar_t* __restrict gse, scalar_t* __restrict gpi, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t h = (pi[f] + qj[f]) + re[f];
    const scalar_t sg = sigmoid(h);
    gse[f] = gi[f] * (h * sg);
    const scalar_t g = gi[f] * se[f] * (sg * (scalar_t(1) + h * (scalar_t(1) - sg)));
    ghe[f] = g;
    gpi[f] += g;
  }
}

template <typename scalar_t>
__attribute__((always_inline)) inline void forward_rows(scalar_t* out, const scalar_t* p,
                                                        const scalar_t* q, const scalar_t* r,
                                                        const scalar_t* s, const int64_t* ptr,
                                                        const int64_t* src, const int64_t* erow,
                                                        int64_t begin, int64_t end, int64_t F) {
  for (int64_t i = begin; i < end; ++i) {
    scalar_t* o = out + i * F;
    for (int64_t f = 0; f < F; ++f) o[f] = scalar_t(0);
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t k = erow ? erow[e] : e;
      message_row(o, p + i * F, q + src[e] * F, r + k * F, s + k * F, F);
    }
  }
}

// Gradients per edge row; outputs that are not wanted (nullptr) go to a scratch row, so the feature
// loop has no branch.
template <typename scalar_t>
__attribute__((always_inline)) inline void backward_rows(
    const scalar_t* go, const scalar_t* p, const scalar_t* q, const scalar_t* r, const scalar_t* s,
    const int64_t* ptr, const int64_t* src, const int64_t* erow, scalar_t* gh, scalar_t* gs,
    scalar_t* gp, int64_t begin, int64_t end, int64_t F) {
  std::vector<scalar_t> scratch(3 * F);
  for (int64_t i = begin; i < end; ++i) {
    scalar_t* gpi = gp ? gp + i * F : scratch.data();
    for (int64_t f = 0; f < F; ++f) gpi[f] = scalar_t(0);
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t k = erow ? erow[e] : e;
      message_row_backward(go + i * F, p + i * F, q + src[e] * F, r + k * F, s + k * F,
                           gh ? gh + e * F : scratch.data() + F,
                           gs ? gs + e * F : scratch.data() + 2 * F, gpi, F);
    }
  }
}

// out[m] = sum_{t in [tptr[m], tptr[m+1])} x[perm[t]].
template <typename scalar_t>
__attribute__((always_inline)) inline void gather_sum_rows(scalar_t* __restrict out,
                                                           const scalar_t* __restrict x,
                                                           const int64_t* perm, const int64_t* tptr,
                                                           int64_t begin, int64_t end, int64_t F) {
  for (int64_t m = begin; m < end; ++m) {
    scalar_t* o = out + m * F;
    for (int64_t f = 0; f < F; ++f) o[f] = scalar_t(0);
    for (int64_t t = tptr[m]; t < tptr[m + 1]; ++t) {
      const scalar_t* xe = x + perm[t] * F;
      for (int64_t f = 0; f < F; ++f) o[f] += xe[f];
    }
  }
}

// The float versions are compiled per ISA (vec_math.h); double runs at the baseline ISA.
PAMNET_FAST_VECTOR_CLONES void forward_rows_f(float* out, const float* p, const float* q,
                                              const float* r, const float* s, const int64_t* ptr,
                                              const int64_t* src, const int64_t* erow, int64_t b,
                                              int64_t e, int64_t F) {
  forward_rows(out, p, q, r, s, ptr, src, erow, b, e, F);
}
PAMNET_FAST_VECTOR_CLONES void backward_rows_f(const float* go, const float* p, const float* q,
                                               const float* r, const float* s, const int64_t* ptr,
                                               const int64_t* src, const int64_t* erow, float* gh,
                                               float* gs, float* gp, int64_t b, int64_t e, int64_t F) {
  backward_rows(go, p, q, r, s, ptr, src, erow, gh, gs, gp, b, e, F);
}
PAMNET_FAST_VECTOR_CLONES void gather_sum_rows_f(float* out, const float* x, const int64_t* perm,
                                                 const int64_t* tptr, int64_t b, int64_t e, int64_t F) {
  gather_sum_rows(out, x, perm, tptr, b, e, F);
}

// Sums per-edge rows x [E, F] into the rows they were gathered from: out[m] = sum_{e: index[e] = m} x[e].
template <typename scalar_t>
void sum_by_index(scalar_t* out, const scalar_t* x, const at::Tensor& index, int64_t M, int64_t F) {
  auto [perm, tptr] = transpose_csr(index, M);
  const int64_t* pm = perm.data_ptr<int64_t>();
  const int64_t* tp = tptr.data_ptr<int64_t>();
  at::parallel_for(0, M, grain_for(M, index.numel(), F), [&](int64_t begin, int64_t end) {
    call_for<scalar_t>(gather_sum_rows_f, gather_sum_rows<double>, out, x, pm, tp, begin, end, F);
  });
}

}  // namespace

at::Tensor fused_edge_message_kernel(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                                     const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                                     const std::optional<at::Tensor>& edge_row) {
  const int64_t N = ptr.numel() - 1, F = p.size(1), E = src.numel();
  const int64_t* erow = edge_row ? edge_row->data_ptr<int64_t>() : nullptr;
  auto out = empty_output({N, F}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fused_edge_message", [&] {
    at::parallel_for(0, N, grain_for(N, E, F), [&](int64_t begin, int64_t end) {
      call_for<scalar_t>(forward_rows_f, forward_rows<double>, out.data_ptr<scalar_t>(),
                         p.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                         s.data_ptr<scalar_t>(), ptr.data_ptr<int64_t>(), src.data_ptr<int64_t>(),
                         erow, begin, end, F);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_edge_message_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> mask) {
  const int64_t N = ptr.numel() - 1, F = p.size(1), E = src.numel(), M = q.size(0);
  const bool need_p = mask[0], need_q = mask[1], need_r = mask[2], need_s = mask[3];
  const bool shared = edge_row.has_value();
  const int64_t* erow = shared ? edge_row->data_ptr<int64_t>() : nullptr;
  auto none = at::empty({0}, p.options());
  if (!(need_p || need_q || need_r || need_s)) return {none, none, none, none};
  at::Tensor grad_p = need_p ? empty_output_like(p) : none;
  // Per-edge gradients: d out / d h (the gradient of r's rows, summed over the edges of each source for
  // q) and d out / d s; with shared rows they are summed into the rows afterwards.
  at::Tensor grad_h = (need_r || need_q) ? empty_output({E, F}, r.options()) : none;
  at::Tensor grad_s_edge = need_s ? empty_output({E, F}, s.options()) : none;
  at::Tensor grad_q = need_q ? empty_output_like(q) : none;
  at::Tensor grad_r = need_r ? (shared ? empty_output_like(r) : grad_h) : none;
  at::Tensor grad_s = need_s ? (shared ? empty_output_like(s) : grad_s_edge) : none;
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fused_edge_message_backward", [&] {
    scalar_t* gh = grad_h.numel() ? grad_h.data_ptr<scalar_t>() : nullptr;
    scalar_t* gs = need_s ? grad_s_edge.data_ptr<scalar_t>() : nullptr;
    scalar_t* gp = need_p ? grad_p.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, grain_for(N, E, F), [&](int64_t begin, int64_t end) {
      call_for<scalar_t>(backward_rows_f, backward_rows<double>, grad_out.data_ptr<scalar_t>(),
                         p.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                         s.data_ptr<scalar_t>(), ptr.data_ptr<int64_t>(), src.data_ptr<int64_t>(),
                         erow, gh, gs, gp, begin, end, F);
    });
    if (need_q) sum_by_index(grad_q.data_ptr<scalar_t>(), gh, src, M, F);
    if (shared && need_r) sum_by_index(grad_r.data_ptr<scalar_t>(), gh, *edge_row, r.size(0), F);
    if (shared && need_s) sum_by_index(grad_s.data_ptr<scalar_t>(), gs, *edge_row, s.size(0), F);
  });
  return {grad_p, grad_q, grad_r, grad_s};
}

}  // namespace cpu
}  // namespace pamnet_fast
