// CPU kernels of pamnet_fast. Each assumes arguments already validated by csrc/ops.cpp (shapes, dtypes,
// sortedness, index ranges): kernels never check, ops never compute.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

namespace pamnet_fast {
namespace cpu {

// pos [N, 3] float32/float64 contiguous; batch_ptr [G + 1] int64: graph g holds nodes
// [batch_ptr[g], batch_ptr[g+1]). Returns (edge_index [2, E] int64 sorted by target then source,
// ptr [N + 1] int64). max_num_neighbors < 0: unlimited. Raises ValueError (TORCH_CHECK_VALUE) naming
// the largest neighbor count when a node exceeds max_num_neighbors and !truncate.
std::tuple<at::Tensor, at::Tensor> radius_graph_kernel(const at::Tensor& pos, double r,
                                                       const at::Tensor& batch_ptr, bool loop,
                                                       int64_t max_num_neighbors, bool truncate);

// k nearest sources per target (ties by smaller index), restricted to distance <= r when has_r.
std::tuple<at::Tensor, at::Tensor> knn_graph_kernel(const at::Tensor& pos, int64_t k,
                                                    const at::Tensor& batch_ptr, bool has_r, double r,
                                                    bool loop);

// edge_index [2, E] int64 sorted by target. Returns (two_hop_kj, two_hop_ji, two_hop_ptr [E+1],
// one_hop_j2i, one_hop_ji, one_hop_ptr [E+1]).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplets_kernel(
    const at::Tensor& edge_index, int64_t num_nodes, bool include_self_pairs);

// out[r] = sum_{s in [ptr[r], ptr[r+1])} a[src[s]] * b[s].
at::Tensor segment_gather_mul_kernel(const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
                                     const at::Tensor& ptr);
std::tuple<at::Tensor, at::Tensor> segment_gather_mul_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
    const at::Tensor& ptr, bool need_a, bool need_b);

// out[i] = sum_{e in [ptr[i], ptr[i+1])} silu(p[i] + q[src[e]] + r[k]) * s[k], k = edge_row[e] if given
// (int64 [E], rows of r and s shared by several edges) else e.
at::Tensor fused_edge_message_kernel(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                                     const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                                     const std::optional<at::Tensor>& edge_row);
// out[e] = silu(p[i] + q[src[e]] + r[k]) * s[k] for e in [ptr[i], ptr[i+1]): the terms, not summed.
at::Tensor edge_message_kernel(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                               const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                               const std::optional<at::Tensor>& edge_row);
// The backward of both: grad_out per target, or per edge (grad_per_edge, edge_message).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_edge_message_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> mask, bool grad_per_edge);

at::Tensor bessel_basis_kernel(const at::Tensor& dist, const at::Tensor& freq, double cutoff,
                               int64_t envelope_exponent);
std::tuple<at::Tensor, at::Tensor> bessel_basis_backward_kernel(const at::Tensor& grad_out,
                                                                const at::Tensor& dist,
                                                                const at::Tensor& freq, double cutoff,
                                                                int64_t envelope_exponent,
                                                                bool need_dist, bool need_freq);

at::Tensor spherical_basis_kernel(const at::Tensor& dist, const at::Tensor& angle,
                                  const at::Tensor& zeros, double cutoff, int64_t envelope_exponent);
std::tuple<at::Tensor, at::Tensor> spherical_basis_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& dist, const at::Tensor& angle,
    const at::Tensor& zeros, double cutoff, int64_t envelope_exponent, bool need_dist,
    bool need_angle);

// Rows per parallel task so that a task covers about 32k entry-features.
int64_t grain_for(int64_t rows, int64_t entries, int64_t features);

// The segment of each entry: rows[s] = r for s in [ptr[r], ptr[r+1]).
at::Tensor segment_rows(const at::Tensor& ptr, int64_t entries);

// Transposed CSR of an index array: for src [S] with values in [0, M), returns (perm [S], tptr [M+1])
// with perm listing the positions s grouped by src[s], ascending s within a group (a stable counting sort).
std::tuple<at::Tensor, at::Tensor> transpose_csr(const at::Tensor& src, int64_t num_rows);

}  // namespace cpu
}  // namespace pamnet_fast
