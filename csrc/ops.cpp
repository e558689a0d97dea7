// Argument checks of every op, then dispatch to the CPU kernels. Kernels assume what is checked here.
// check_values=false skips the checks that read tensor values (index ranges, CSR pointers, sorted
// batches, finite inputs): for inputs built valid, e.g. by pamnet_fast.nn.graphs.build_graphs.
#include "ops.h"

#include <cmath>
#include <string>

#include "cpu/kernels.h"

namespace pamnet_fast {

namespace {

// dtype names as Python users write them (torch.float32), not ATen's (Float).
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return c10::toString(t);
  }
}

void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor here, got ", t.device());
}

void check_float(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  check_cpu(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
                   " must be float32 or float64, got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be ", dim, "-dimensional, got shape ",
                    t.sizes());
}

at::Tensor check_index(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  check_cpu(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", name,
                   " must be an int32 or int64 index tensor, got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be ", dim, "-dimensional, got shape ",
                    t.sizes());
  return t.to(at::kLong).contiguous();
}

void check_finite(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.numel() == 0 || at::isfinite(t).all().item<bool>(), op, ": ", name,
                    " contains NaN or infinite values");
}

void check_positive(const char* op, const char* name, double v) {
  TORCH_CHECK_VALUE(v > 0 && std::isfinite(v), op, ": ", name, " must be positive and finite, got ", v);
}

void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                      const at::Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " is ",
                   dtype_name(t.scalar_type()), " but ", ref_name, " is ", dtype_name(ref.scalar_type()));
}

void check_rows(const char* op, const char* name, const at::Tensor& t, int64_t rows, const char* what) {
  TORCH_CHECK_VALUE(t.size(0) == rows, op, ": ", name, " has ", t.size(0), " rows but ", what, " is ",
                    rows);
}

void check_features(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                    const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.size(1) == ref.size(1), op, ": ", name, " has ", t.size(1), " features but ",
                    ref_name, " has ", ref.size(1));
}

void check_range(const char* op, const char* name, const at::Tensor& idx, int64_t upper) {
  if (idx.numel() == 0) return;
  const bool ok = idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < upper;
  TORCH_CHECK_VALUE(ok, op, ": ", name, " has entries outside [0, ", upper, ")");
}

void check_non_decreasing(const char* op, const char* name, const at::Tensor& t, const char* what) {
  const int64_t n = t.numel();
  if (n < 2) return;
  const bool ok = !(t.slice(0, 1, n) < t.slice(0, 0, n - 1)).any().item<bool>();
  TORCH_CHECK_VALUE(ok, op, ": ", name, " must be ", what);
}

// check_values=false: only the dtype and shape (the values are vouched for by the caller).
at::Tensor check_csr(const char* op, const char* name, const at::Tensor& ptr, int64_t nnz,
                     bool check_values) {
  auto p = check_index(op, name, ptr, 1);
  TORCH_CHECK_VALUE(p.numel() > 0, op, ": ", name, " must have at least one entry (ptr[0] = 0)");
  if (!check_values) return p;
  const int64_t first = p[0].item<int64_t>(), last = p[-1].item<int64_t>();
  TORCH_CHECK_VALUE(first == 0 && last == nnz, op, ": ", name, " must start at 0 and end at ", nnz,
                    " (the number of entries), got ", first, " and ", last);
  check_non_decreasing(op, name, p, "non-decreasing");
  return p;
}

at::Tensor check_positions(const char* op, const at::Tensor& pos, bool check_values = true) {
  check_float(op, "pos", pos, 2);
  TORCH_CHECK_VALUE(pos.size(1) == 3, op, ": pos must have shape [N, 3], got ", pos.sizes());
  if (check_values) check_finite(op, "pos", pos);
  return pos.contiguous();
}

// Node ranges of the graphs of a sorted batch vector: [G + 1] with graph g = [ptr[g], ptr[g+1]).
// check_values=false: the caller vouches that batch is sorted and non-negative.
at::Tensor graph_ptr(const char* op, const std::optional<at::Tensor>& batch, int64_t num_nodes,
                     bool check_values) {
  auto opts = at::TensorOptions().dtype(at::kLong);
  if (!batch.has_value()) return at::tensor({int64_t(0), num_nodes}, opts);
  auto b = check_index(op, "batch", *batch, 1);
  TORCH_CHECK_VALUE(b.numel() == num_nodes, op, ": batch has ", b.numel(), " entries but pos has ",
                    num_nodes, " nodes");
  if (num_nodes == 0) return at::zeros({1}, opts);
  if (check_values) {
    TORCH_CHECK_VALUE(b.min().item<int64_t>() >= 0, op, ": batch contains negative graph indices");
    check_non_decreasing(op, "batch", b,
                         "sorted (nodes of each graph contiguous, graphs in ascending order)");
  }
  // Empty graphs (skipped ids) need no range: split where the graph index changes.
  auto starts = at::nonzero(b.slice(0, 1, num_nodes) != b.slice(0, 0, num_nodes - 1)).view(-1) + 1;
  return at::cat({at::zeros({1}, opts), starts, at::tensor({num_nodes}, opts)});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> radius_graph(const at::Tensor& pos, double r,
                                                const std::optional<at::Tensor>& batch, bool loop,
                                                int64_t max_num_neighbors, bool truncate,
                                                bool check_values) {
  const char* op = "radius_graph";
  auto p = check_positions(op, pos, check_values);
  check_positive(op, "r", r);
  auto ptr = graph_ptr(op, batch, p.size(0), check_values);
  return cpu::radius_graph_kernel(p, r, ptr, loop, max_num_neighbors, truncate);
}

std::tuple<at::Tensor, at::Tensor> knn_graph(const at::Tensor& pos, int64_t k,
                                             const std::optional<at::Tensor>& batch,
                                             std::optional<double> r, bool loop) {
  const char* op = "knn_graph";
  auto p = check_positions(op, pos);
  TORCH_CHECK_VALUE(k > 0, op, ": k must be positive and finite, got ", k);
  if (r.has_value()) check_positive(op, "r", *r);
  auto ptr = graph_ptr(op, batch, p.size(0), true);
  return cpu::knn_graph_kernel(p, k, ptr, r.has_value(), r.value_or(0.0), loop);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplets(
    const at::Tensor& edge_index, int64_t num_nodes, bool include_self_pairs, bool check_values,
    at::OptionalIntArrayRef sizes) {
  const char* op = "triplets";
  TORCH_CHECK_VALUE(num_nodes >= 0, op, ": num_nodes must be a non-negative int, got ", num_nodes);
  auto ei = check_index(op, "edge_index", edge_index, 2);
  TORCH_CHECK_VALUE(ei.size(0) == 2, op, ": edge_index must have shape [2, E], got ", ei.sizes());
  if (sizes.has_value()) {
    TORCH_CHECK_VALUE(sizes->size() == 2 && (*sizes)[0] >= 0 && (*sizes)[1] >= 0, op,
                      ": sizes must be two non-negative ints (two-hop, one-hop), got ", *sizes);
  }
  if (check_values) {
    check_range(op, "edge_index", ei, num_nodes);
    check_non_decreasing(op, "edge_index", ei[1],
                         "sorted by target (edge_index[1] non-decreasing); sort it, e.g. with "
                         "torch_geometric.utils.sort_edge_index(edge_index, sort_by_row=False)");
  }
  auto out = cpu::triplets_kernel(ei, num_nodes, include_self_pairs);
  // Sizes are what the GPU path allocates from; on the CPU they cost nothing to verify.
  if (sizes.has_value()) {
    const int64_t two = std::get<0>(out).size(0), one = std::get<3>(out).size(0);
    TORCH_CHECK_VALUE(two == (*sizes)[0] && one == (*sizes)[1], op, ": sizes says ", *sizes,
                      " triplets (two-hop, one-hop), but the edge list has [", two, ", ", one, "]");
  }
  return out;
}

// A transposed CSR of an index (ops.transposed_csr) serves the GPU kernels' backward; the CPU
// kernels transpose on the fly (a counting sort), so here its shape is only checked.
static void check_transpose(const char* op, const char* name, const std::optional<at::Tensor>& t,
                            int64_t entries, int64_t rows) {
  if (!t) return;
  TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
                   t->scalar_type());
  TORCH_CHECK_VALUE(t->dim() == 1 && t->numel() == 2 * entries + rows + 1, op, ": ", name,
                    " must have 2 * ", entries, " + ", rows, " + 1 entries (ops.transposed_csr), got "
                    "shape ", t->sizes());
}

at::Tensor segment_gather_mul(const at::Tensor& a, const at::Tensor& src, const at::Tensor& b,
                              const at::Tensor& ptr, bool check_values,
                              const std::optional<at::Tensor>& src_transpose) {
  const char* op = "segment_gather_mul";
  check_float(op, "a", a, 2);
  check_float(op, "b", b, 2);
  check_same_dtype(op, "b", b, "a", a);
  auto s = check_index(op, "src", src, 1);
  check_features(op, "b", b, "a", a);
  check_rows(op, "src", s, b.size(0), "the number of rows of b");
  auto p = check_csr(op, "ptr", ptr, b.size(0), check_values);
  if (check_values) check_range(op, "src", s, a.size(0));
  check_transpose(op, "src_transpose", src_transpose, s.numel(), a.size(0));
  return cpu::segment_gather_mul_kernel(a.contiguous(), s, b.contiguous(), p);
}

std::tuple<at::Tensor, at::Tensor> segment_gather_mul_backward(const at::Tensor& grad_out,
                                                               const at::Tensor& a,
                                                               const at::Tensor& src,
                                                               const at::Tensor& b,
                                                               const at::Tensor& ptr, bool need_a,
                                                               bool need_b,
                                                               const std::optional<at::Tensor>&) {
  // Called by autograd with the forward's (already checked) inputs.
  const char* op = "segment_gather_mul_backward";
  check_float(op, "grad_out", grad_out, 2);
  TORCH_CHECK_VALUE(grad_out.size(0) == ptr.numel() - 1 && grad_out.size(1) == a.size(1), op,
                    ": grad_out has shape ", grad_out.sizes(), ", expected [", ptr.numel() - 1, ", ",
                    a.size(1), "]");
  return cpu::segment_gather_mul_backward_kernel(grad_out.to(a.scalar_type()).contiguous(),
                                                 a.contiguous(), src.to(at::kLong).contiguous(),
                                                 b.contiguous(), ptr.to(at::kLong).contiguous(),
                                                 need_a, need_b);
}

namespace {

// The indices of fused_edge_message / edge_message (the same inputs), checked, as int64.
struct EdgeMessageIndices {
  at::Tensor ptr, src;
  std::optional<at::Tensor> edge_row;
};

EdgeMessageIndices check_edge_message(const char* op, const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& r, const at::Tensor& s, const at::Tensor& ptr,
                                      const at::Tensor& src,
                                      const std::optional<at::Tensor>& edge_row, bool check_values,
                                      const std::optional<at::Tensor>& src_transpose,
                                      const std::optional<at::Tensor>& row_transpose) {
  check_float(op, "p", p, 2);
  check_float(op, "q", q, 2);
  check_float(op, "r", r, 2);
  check_float(op, "s", s, 2);
  check_same_dtype(op, "q", q, "p", p);
  check_same_dtype(op, "r", r, "p", p);
  check_same_dtype(op, "s", s, "p", p);
  auto sr = check_index(op, "src", src, 1);
  check_features(op, "q", q, "p", p);
  check_features(op, "r", r, "p", p);
  check_features(op, "s", s, "p", p);
  check_rows(op, "s", s, r.size(0), "the number of rows of r");
  std::optional<at::Tensor> er;
  if (edge_row) {
    // Edges share rows of r and s: edge e uses row edge_row[e].
    er = check_index(op, "edge_row", *edge_row, 1);
    if (check_values) check_range(op, "edge_row", *er, r.size(0));
  }
  const int64_t E = er ? er->numel() : r.size(0);
  const char* edges = er ? "the number of edges (len(edge_row))" : "the number of rows of r (edges)";
  check_rows(op, "src", sr, E, edges);
  auto pt = check_csr(op, "ptr", ptr, E, check_values);
  check_rows(op, "p", p, pt.numel() - 1, "the number of targets (len(ptr) - 1)");
  if (check_values) check_range(op, "src", sr, q.size(0));
  check_transpose(op, "src_transpose", src_transpose, E, q.size(0));
  TORCH_CHECK_VALUE(!row_transpose || edge_row, op, ": row_transpose given without edge_row");
  check_transpose(op, "row_transpose", row_transpose, E, r.size(0));
  return {pt, sr, er};
}

// The backward of either op: grad_out of shape [rows, F] (targets or edges).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> edge_message_backward_of(
    const char* op, bool grad_per_edge, const at::Tensor& grad_out, const at::Tensor& p,
    const at::Tensor& q, const at::Tensor& r, const at::Tensor& s, const at::Tensor& ptr,
    const at::Tensor& src, const std::optional<at::Tensor>& edge_row,
    std::array<bool, 4> output_mask) {
  check_float(op, "grad_out", grad_out, 2);
  const int64_t rows = grad_per_edge ? src.numel() : p.size(0);
  TORCH_CHECK_VALUE(grad_out.size(0) == rows && grad_out.size(1) == p.size(1), op,
                    ": grad_out has shape ", grad_out.sizes(), ", expected [", rows, ", ", p.size(1),
                    "]");
  std::optional<at::Tensor> er;
  if (edge_row) er = edge_row->to(at::kLong).contiguous();
  return cpu::fused_edge_message_backward_kernel(
      grad_out.to(p.scalar_type()).contiguous(), p.contiguous(), q.contiguous(), r.contiguous(),
      s.contiguous(), ptr.to(at::kLong).contiguous(), src.to(at::kLong).contiguous(), er, output_mask,
      grad_per_edge);
}

}  // namespace

at::Tensor fused_edge_message(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                              const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                              const std::optional<at::Tensor>& edge_row, bool check_values,
                              const std::optional<at::Tensor>& src_transpose,
                              const std::optional<at::Tensor>& row_transpose) {
  auto idx = check_edge_message("fused_edge_message", p, q, r, s, ptr, src, edge_row, check_values,
                                src_transpose, row_transpose);
  return cpu::fused_edge_message_kernel(p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous(),
                                        idx.ptr, idx.src, idx.edge_row);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_edge_message_backward(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  return edge_message_backward_of("fused_edge_message_backward", false, grad_out, p, q, r, s, ptr, src,
                                  edge_row, output_mask);
}

at::Tensor edge_message(const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
                        const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
                        const std::optional<at::Tensor>& edge_row, bool check_values,
                        const std::optional<at::Tensor>& src_transpose,
                        const std::optional<at::Tensor>& row_transpose) {
  auto idx = check_edge_message("edge_message", p, q, r, s, ptr, src, edge_row, check_values,
                                src_transpose, row_transpose);
  return cpu::edge_message_kernel(p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous(),
                                  idx.ptr, idx.src, idx.edge_row);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> edge_message_backward(
    const at::Tensor& grad_out, const at::Tensor& p, const at::Tensor& q, const at::Tensor& r,
    const at::Tensor& s, const at::Tensor& ptr, const at::Tensor& src,
    const std::optional<at::Tensor>& edge_row, std::array<bool, 4> output_mask,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  return edge_message_backward_of("edge_message_backward", true, grad_out, p, q, r, s, ptr, src,
                                  edge_row, output_mask);
}

namespace {

void check_distances(const char* op, const at::Tensor& dist, double cutoff, int64_t envelope_exponent,
                     bool check_values) {
  check_positive(op, "cutoff", cutoff);
  TORCH_CHECK_VALUE(envelope_exponent > 0, op, ": envelope_exponent must be positive and finite, got ",
                    envelope_exponent);
  if (!check_values) return;
  check_finite(op, "dist", dist);
  TORCH_CHECK_VALUE(dist.numel() == 0 || dist.min().item<double>() >= 0, op,
                    ": dist contains negative distances");
}

}  // namespace

at::Tensor bessel_basis(const at::Tensor& dist, const at::Tensor& freq, double cutoff,
                        int64_t envelope_exponent, bool check_values) {
  const char* op = "bessel_basis";
  check_float(op, "dist", dist, 1);
  check_float(op, "freq", freq, 1);
  check_same_dtype(op, "freq", freq, "dist", dist);
  check_distances(op, dist, cutoff, envelope_exponent, check_values);
  return cpu::bessel_basis_kernel(dist.contiguous(), freq.contiguous(), cutoff, envelope_exponent);
}

std::tuple<at::Tensor, at::Tensor> bessel_basis_backward(const at::Tensor& grad_out,
                                                         const at::Tensor& dist,
                                                         const at::Tensor& freq, double cutoff,
                                                         int64_t envelope_exponent, bool need_dist,
                                                         bool need_freq) {
  const char* op = "bessel_basis_backward";
  check_float(op, "grad_out", grad_out, 2);
  TORCH_CHECK_VALUE(grad_out.size(0) == dist.numel() && grad_out.size(1) == freq.numel(), op,
                    ": grad_out has shape ", grad_out.sizes(), ", expected [", dist.numel(), ", ",
                    freq.numel(), "]");
  return cpu::bessel_basis_backward_kernel(grad_out.to(dist.scalar_type()).contiguous(),
                                           dist.contiguous(), freq.contiguous(), cutoff,
                                           envelope_exponent, need_dist, need_freq);
}

at::Tensor spherical_basis(const at::Tensor& dist, const at::Tensor& angle, const at::Tensor& zeros,
                           double cutoff, int64_t envelope_exponent, bool check_values) {
  const char* op = "spherical_basis";
  check_float(op, "dist", dist, 1);
  check_float(op, "angle", angle, 1);
  check_float(op, "zeros", zeros, 2);
  check_same_dtype(op, "angle", angle, "dist", dist);
  check_rows(op, "angle", angle, dist.size(0), "the length of dist");
  check_distances(op, dist, cutoff, envelope_exponent, check_values);
  if (check_values) check_finite(op, "angle", angle);
  return cpu::spherical_basis_kernel(dist.contiguous(), angle.contiguous(), zeros, cutoff,
                                     envelope_exponent);
}

std::tuple<at::Tensor, at::Tensor> spherical_basis_backward(const at::Tensor& grad_out,
                                                            const at::Tensor& dist,
                                                            const at::Tensor& angle,
                                                            const at::Tensor& zeros, double cutoff,
                                                            int64_t envelope_exponent,
                                                            bool need_dist, bool need_angle) {
  const char* op = "spherical_basis_backward";
  check_float(op, "grad_out", grad_out, 2);
  TORCH_CHECK_VALUE(grad_out.size(0) == dist.numel() &&
                        grad_out.size(1) == zeros.size(0) * zeros.size(1),
                    op, ": grad_out has shape ", grad_out.sizes(), ", expected [", dist.numel(), ", ",
                    zeros.size(0) * zeros.size(1), "]");
  return cpu::spherical_basis_backward_kernel(grad_out.to(dist.scalar_type()).contiguous(),
                                              dist.contiguous(), angle.contiguous(), zeros, cutoff,
                                              envelope_exponent, need_dist, need_angle);
}

}  // namespace pamnet_fast
