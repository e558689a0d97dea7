// Angle triplets of a target-sorted edge list, in two passes (count per receiving edge, then fill)
// so each output is allocated once and written in order: sorted by the receiving edge, then by the
// other edge, with no sort needed.
//   two-hop: (k -> j, j -> i), k != i: the edges into j = source of the receiving edge.
//   one-hop: (j2 -> i, j -> i):        the edges into i = target of the receiving edge.
#include <ATen/Parallel.h>

#include "cpu/kernels.h"

namespace pamnet_fast {
namespace cpu {

namespace {

// Exclusive scan of counts[0..n) into ptr[0..n].
void exclusive_scan(const int64_t* counts, int64_t* ptr, int64_t n) {
  ptr[0] = 0;
  for (int64_t e = 0; e < n; ++e) ptr[e + 1] = ptr[e] + counts[e];
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplets_kernel(
    const at::Tensor& edge_index, int64_t num_nodes, bool include_self_pairs) {
  const int64_t E = edge_index.size(1);
  auto opts = edge_index.options().dtype(at::kLong);
  auto ei = edge_index.contiguous();
  const int64_t* src = ei.data_ptr<int64_t>();
  const int64_t* dst = src + E;

  // CSR over targets: edges into node v are [node_ptr[v], node_ptr[v+1]).
  std::vector<int64_t> node_ptr(num_nodes + 1, 0);
  for (int64_t e = 0; e < E; ++e) ++node_ptr[dst[e] + 1];
  for (int64_t v = 0; v < num_nodes; ++v) node_ptr[v + 1] += node_ptr[v];
  const int64_t* np = node_ptr.data();

  const int64_t grain = std::max<int64_t>(1, 4096 / (E / std::max<int64_t>(num_nodes, 1) + 1));
  std::vector<int64_t> count2(E), count1(E);
  at::parallel_for(0, E, grain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t j = src[e], i = dst[e];
      int64_t c = 0;
      for (int64_t kj = np[j]; kj < np[j + 1]; ++kj) c += src[kj] != i;
      count2[e] = c;
      count1[e] = np[i + 1] - np[i] - (include_self_pairs ? 0 : 1);
    }
  });
  auto two_ptr = at::empty({E + 1}, opts), one_ptr = at::empty({E + 1}, opts);
  int64_t* p2 = two_ptr.data_ptr<int64_t>();
  int64_t* p1 = one_ptr.data_ptr<int64_t>();
  exclusive_scan(count2.data(), p2, E);
  exclusive_scan(count1.data(), p1, E);

  auto two_kj = at::empty({p2[E]}, opts), two_ji = at::empty({p2[E]}, opts);
  auto one_j2i = at::empty({p1[E]}, opts), one_ji = at::empty({p1[E]}, opts);
  int64_t* kj_out = two_kj.data_ptr<int64_t>();
  int64_t* ji2_out = two_ji.data_ptr<int64_t>();
  int64_t* j2i_out = one_j2i.data_ptr<int64_t>();
  int64_t* ji1_out = one_ji.data_ptr<int64_t>();
  at::parallel_for(0, E, grain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t j = src[e], i = dst[e];
      int64_t t = p2[e];
      for (int64_t kj = np[j]; kj < np[j + 1]; ++kj) {
        if (src[kj] == i) continue;
        kj_out[t] = kj;
        ji2_out[t++] = e;
      }
      t = p1[e];
      for (int64_t j2i = np[i]; j2i < np[i + 1]; ++j2i) {
        if (j2i == e && !include_self_pairs) continue;
        j2i_out[t] = j2i;
        ji1_out[t++] = e;
      }
    }
  });
  return {two_kj, two_ji, two_ptr, one_j2i, one_ji, one_ptr};
}

}  // namespace cpu
}  // namespace pamnet_fast
