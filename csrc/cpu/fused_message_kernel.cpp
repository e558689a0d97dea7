// fused_edge_message: out[i] = sum_{e in [ptr[i], ptr[i+1])} silu(p[i] + q[src[e]] + r[k]) * s[k],
// k = edge_row[e] (or e): edges may share their rows of r and s (both directions of a pair).
// edge_message: the same terms stored per edge, out[e] ([E, F]); its backward is this one reading the
// gradient per edge.
//
// One target per task, features innermost. The backward recomputes h = p + q + r and the SiLU per
// edge instead of keeping E x F activations; the gradient w.r.t. q (gathered by src) is summed over
// the transposed CSR, so every sum has a fixed order whatever the number of threads.
//
// When edge_row pairs each edge j -> i with its reverse i -> j (a symmetric graph, one row per
// unordered pair, as PAMNet's global plex), the backward needs no E x F buffer at all: target i's
// task recomputes both directions of each of its pairs, so grad q[i] (its outgoing edges are the
// reverses of its incoming ones) and grad r, grad s of the pair are complete sums there. That costs
// a second SiLU per edge but saves writing and re-reading two E x F gradients, whose fresh pages
// alone cost more than the arithmetic. The sums are in the same order as the general path's, so the
// values are bitwise the same.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/output_buffer.h"
#include "cpu/vec_math.h"

namespace pamnet_fast {
namespace cpu {

namespace {

// One edge row: o += silu(pi + qj + re) * se (kAccumulate, the sum per target) or o = ... (the row of
// one edge, edge_message). Restrict-qualified parameters tell GCC the rows do not overlap, so the loop
// vectorizes without runtime alias checks.
template <bool kAccumulate, typename scalar_t>
__attribute__((always_inline)) inline void message_row(scalar_t* __restrict o,
                                                       const scalar_t* __restrict pi,
                                                       const scalar_t* __restrict qj,
                                                       const scalar_t* __restrict re,
                                                       const scalar_t* __restrict se, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t h = (pi[f] + qj[f]) + re[f];
    if constexpr (kAccumulate) {
      o[f] += h * sigmoid(h) * se[f];
    } else {
      o[f] = h * sigmoid(h) * se[f];
    }
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
__attribute__((always_inline)) inline void edge_rows(scalar_t* out, const scalar_t* p, const scalar_t* q,
                                                     const scalar_t* r, const scalar_t* s,
                                                     const int64_t* ptr, const int64_t* src,
                                                     const int64_t* erow, int64_t begin, int64_t end,
                                                     int64_t F) {
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t k = erow ? erow[e] : e;
      message_row<false>(out + e * F, p + i * F, q + src[e] * F, r + k * F, s + k * F, F);
    }
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
      message_row<true>(o, p + i * F, q + src[e] * F, r + k * F, s + k * F, F);
    }
  }
}

// Gradients per edge row; outputs that are not wanted (nullptr) go to a scratch row, so the feature
// loop has no branch. grad_per_edge: go has a row per edge (edge_message), else per target.
template <typename scalar_t>
__attribute__((always_inline)) inline void backward_rows(
    const scalar_t* go, const scalar_t* p, const scalar_t* q, const scalar_t* r, const scalar_t* s,
    const int64_t* ptr, const int64_t* src, const int64_t* erow, scalar_t* gh, scalar_t* gs,
    scalar_t* gp, int64_t begin, int64_t end, int64_t F, bool grad_per_edge) {
  std::vector<scalar_t> scratch(3 * F);
  for (int64_t i = begin; i < end; ++i) {
    scalar_t* gpi = gp ? gp + i * F : scratch.data();
    for (int64_t f = 0; f < F; ++f) gpi[f] = scalar_t(0);
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t k = erow ? erow[e] : e;
      message_row_backward(go + (grad_per_edge ? e : i) * F, p + i * F, q + src[e] * F, r + k * F,
                           s + k * F,
                           gh ? gh + e * F : scratch.data() + F,
                           gs ? gs + e * F : scratch.data() + 2 * F, gpi, F);
    }
  }
}

// One pair of the paired backward, seen from target i with e = j -> i and its reverse i -> j:
// gp_i += d/dh(j -> i), gq_i += d/dh(i -> j), and the pair's row gradients (gr, gs) in full.
template <typename scalar_t>
__attribute__((always_inline)) inline void pair_row_backward(
    const scalar_t* __restrict gi, const scalar_t* __restrict gj, const scalar_t* __restrict pi,
    const scalar_t* __restrict pj, const scalar_t* __restrict qi, const scalar_t* __restrict qj,
    const scalar_t* __restrict rk, const scalar_t* __restrict sk, scalar_t* __restrict gpi,
    scalar_t* __restrict gqi, scalar_t* __restrict grk, scalar_t* __restrict gsk, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t h_in = (pi[f] + qj[f]) + rk[f];  // j -> i
    const scalar_t h_out = (pj[f] + qi[f]) + rk[f];  // i -> j
    const scalar_t sg_in = sigmoid(h_in), sg_out = sigmoid(h_out);
    const scalar_t g_in = gi[f] * sk[f] * (sg_in * (scalar_t(1) + h_in * (scalar_t(1) - sg_in)));
    const scalar_t g_out = gj[f] * sk[f] * (sg_out * (scalar_t(1) + h_out * (scalar_t(1) - sg_out)));
    gpi[f] += g_in;
    gqi[f] += g_out;
    // Edge order: i -> j (target j < i when written) precedes j -> i, as in sum_by_index.
    grk[f] = g_out + g_in;
    gsk[f] = gj[f] * (h_out * sg_out) + gi[f] * (h_in * sg_in);
  }
}

// Paired backward over targets [begin, end): the row gradients of pair k are written by its larger
// node (src j < target i), so every output row has exactly one writer.
template <typename scalar_t>
__attribute__((always_inline)) inline void paired_backward_rows(
    const scalar_t* go, const scalar_t* p, const scalar_t* q, const scalar_t* r, const scalar_t* s,
    const int64_t* ptr, const int64_t* src, const int64_t* erow, scalar_t* gp, scalar_t* gq,
    scalar_t* gr, scalar_t* gs, int64_t begin, int64_t end, int64_t F) {
  std::vector<scalar_t> scratch(4 * F);
  for (int64_t i = begin; i < end; ++i) {
    scalar_t* gpi = gp ? gp + i * F : scratch.data();
    scalar_t* gqi = gq ? gq + i * F : scratch.data() + F;
    for (int64_t f = 0; f < F; ++f) gpi[f] = gqi[f] = scalar_t(0);
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      const int64_t j = src[e], k = erow[e];
      const bool writer = j < i;
      pair_row_backward(go + i * F, go + j * F, p + i * F, p + j * F, q + i * F, q + j * F, r + k * F,
                        s + k * F, gpi, gqi, (gr && writer) ? gr + k * F : scratch.data() + 2 * F,
                        (gs && writer) ? gs + k * F : scratch.data() + 3 * F, F);
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
PAMNET_FAST_VECTOR_CLONES void edge_rows_f(float* out, const float* p, const float* q, const float* r,
                                           const float* s, const int64_t* ptr, const int64_t* src,
                                           const int64_t* erow, int64_t b, int64_t e, int64_t F) {
  edge_rows(out, p, q, r, s, ptr, src, erow, b, e, F);
}
PAMNET_FAST_VECTOR_CLONES void backward_rows_f(const float* go, const float* p, const float* q,
                                               const float* r, const float* s, const int64_t* ptr,
                                               const int64_t* src, const int64_t* erow, float* gh,
                                               float* gs, float* gp, int64_t b, int64_t e, int64_t F,
                                               bool grad_per_edge) {
  backward_rows(go, p, q, r, s, ptr, src, erow, gh, gs, gp, b, e, F, grad_per_edge);
}
PAMNET_FAST_VECTOR_CLONES void paired_backward_rows_f(
    const float* go, const float* p, const float* q, const float* r, const float* s, const int64_t* ptr,
    const int64_t* src, const int64_t* erow, float* gp, float* gq, float* gr, float* gs, int64_t b,
    int64_t e, int64_t F) {
  paired_backward_rows(go, p, q, r, s, ptr, src, erow, gp, gq, gr, gs, b, e, F);
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

// True when edge_row pairs every edge j -> i (j != i) with its reverse i -> j and with nothing else:
// each of the R rows is used by exactly one such pair. Needs sources sorted within each target
// (otherwise it answers false and the general path runs). O(E log degree).
bool rows_pair_reverse_edges(const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& edge_row,
                             int64_t R) {
  const int64_t N = ptr.numel() - 1, E = src.numel();
  if (E != 2 * R) return false;
  const int64_t* pp = ptr.data_ptr<int64_t>();
  const int64_t* sp = src.data_ptr<int64_t>();
  const int64_t* er = edge_row.data_ptr<int64_t>();
  std::vector<int32_t> uses(R, 0);
  for (int64_t e = 0; e < E; ++e)
    if (++uses[er[e]] > 2) return false;  // E == 2R: then every row is used exactly twice
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t e = pp[i]; e < pp[i + 1]; ++e) {
      const int64_t j = sp[e];
      if (j == i || j < 0 || j >= N) return false;
      const int64_t* first = sp + pp[j];
      const int64_t* last = sp + pp[j + 1];
      const int64_t* hit = std::lower_bound(first, last, i);
      if (hit == last || *hit != i || er[hit - sp] != er[e]) return false;
    }
  }
  return true;
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

at::Tensor edge_message_kernel(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                               const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                               const std::optional<at::Tensor>& edge_row) {
  const int64_t N = ptr.numel() - 1, F = p.size(1), E = src.numel();
  const int64_t* erow = edge_row ? edge_row->data_ptr<int64_t>() : nullptr;
  auto out = empty_output({E, F}, p.options());  // every edge lies in one target's segment
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "edge_message", [&] {
    at::parallel_for(0, N, grain_for(N, E, F), [&](int64_t begin, int64_t end) {
      call_for<scalar_t>(edge_rows_f, edge_rows<double>, out.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                         q.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                         ptr.data_ptr<int64_t>(), src.data_ptr<int64_t>(), erow, begin, end, F);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_edge_message_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> mask, bool grad_per_edge) {
  const int64_t N = ptr.numel() - 1, F = p.size(1), E = src.numel(), M = q.size(0);
  const bool need_p = mask[0], need_q = mask[1], need_r = mask[2], need_s = mask[3];
  const bool shared = edge_row.has_value();
  const int64_t* erow = shared ? edge_row->data_ptr<int64_t>() : nullptr;
  auto none = at::empty({0}, p.options());
  if (!(need_p || need_q || need_r || need_s)) return {none, none, none, none};
  at::Tensor grad_p = need_p ? empty_output_like(p) : none;
  // The paired path reads each pair's two gradients as go[i], go[j]: per target only.
  if (shared && !grad_per_edge && (need_q || need_r || need_s) && M == N &&
      rows_pair_reverse_edges(ptr, src, *edge_row, r.size(0))) {
    at::Tensor grad_q = need_q ? empty_output_like(q) : none;
    at::Tensor grad_r = need_r ? empty_output_like(r) : none;
    at::Tensor grad_s = need_s ? empty_output_like(s) : none;
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fused_edge_message_backward", [&] {
      auto data = [](at::Tensor& t) { return t.numel() ? t.data_ptr<scalar_t>() : nullptr; };
      at::parallel_for(0, N, grain_for(N, 2 * E, F), [&](int64_t begin, int64_t end) {
        call_for<scalar_t>(paired_backward_rows_f, paired_backward_rows<double>,
                           grad_out.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
                           r.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), ptr.data_ptr<int64_t>(),
                           src.data_ptr<int64_t>(), erow, data(grad_p), data(grad_q), data(grad_r),
                           data(grad_s), begin, end, F);
      });
    });
    return {grad_p, grad_q, grad_r, grad_s};
  }
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
                         erow, gh, gs, gp, begin, end, F, grad_per_edge);
    });
    if (need_q) sum_by_index(grad_q.data_ptr<scalar_t>(), gh, src, M, F);
    if (shared && need_r) sum_by_index(grad_r.data_ptr<scalar_t>(), gh, *edge_row, r.size(0), F);
    if (shared && need_s) sum_by_index(grad_s.data_ptr<scalar_t>(), gs, *edge_row, s.size(0), F);
  });
  return {grad_p, grad_q, grad_r, grad_s};
}

}  // namespace cpu
}  // namespace pamnet_fast
