// Checked entry points of the pamnet_fast ops on CPU: validate arguments (TORCH_CHECK_TYPE ->
// TypeError, TORCH_CHECK_VALUE -> ValueError, each naming the op and the tensor), then call a kernel.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

namespace pamnet_fast {

std::tuple<at::Tensor, at::Tensor> radius_graph(const at::Tensor& pos, double r,
                                                const std::optional<at::Tensor>& batch, bool loop,
                                                int64_t max_num_neighbors, bool truncate,
                                                bool check_values);
std::tuple<at::Tensor, at::Tensor> knn_graph(const at::Tensor& pos, int64_t k,
                                             const std::optional<at::Tensor>& batch,
                                             std::optional<double> r, bool loop);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplets(
    const at::Tensor& edge_index, int64_t num_nodes, bool include_self_pairs, bool check_values,
    at::OptionalIntArrayRef sizes);
at::Tensor segment_gather_mul(const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
                              const at::Tensor& ptr, bool check_values,
                              const std::optional<at::Tensor>& src_transpose);
std::tuple<at::Tensor, at::Tensor> segment_gather_mul_backward(const at::Tensor& grad_out,
                                                               const at::Tensor& a,
                                                               const at::Tensor& src,
                                                               const at::Tensor& b,
                                                               const at::Tensor& ptr, bool need_a,
                                                               bool need_b,
                                                               const std::optional<at::Tensor>& src_transpose);
at::Tensor fused_edge_message(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                              const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                              const std::optional<at::Tensor>& edge_row, bool check_values,
                              const std::optional<at::Tensor>& src_transpose,
                              const std::optional<at::Tensor>& row_transpose);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_edge_message_backward(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>& src_transpose, const std::optional<at::Tensor>& row_transpose);
at::Tensor edge_message(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                        const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                        const std::optional<at::Tensor>& edge_row, bool check_values,
                        const std::optional<at::Tensor>& src_transpose,
                        const std::optional<at::Tensor>& row_transpose);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> edge_message_backward(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>& src_transpose, const std::optional<at::Tensor>& row_transpose);
at::Tensor bessel_basis(const at::Tensor& dist, const at::Tensor& freq, double cutoff,
                        int64_t envelope_exponent, bool check_values);
std::tuple<at::Tensor, at::Tensor> bessel_basis_backward(const at::Tensor& grad_out,
                                                         const at::Tensor& dist,
                                                         const at::Tensor& freq, double cutoff,
                                                         int64_t envelope_exponent, bool need_dist,
                                                         bool need_freq);
at::Tensor spherical_basis(const at::Tensor& dist, const at::Tensor& angle, const at::Tensor& zeros,
                           double cutoff, int64_t envelope_exponent, bool check_values);
std::tuple<at::Tensor, at::Tensor> spherical_basis_backward(const at::Tensor& grad_out,
                                                            const at::Tensor& dist,
                                                            const at::Tensor& angle,
                                                            const at::Tensor& zeros, double cutoff,
                                                            int64_t envelope_exponent,
                                                            bool need_dist, bool need_angle);

}  // namespace pamnet_fast
