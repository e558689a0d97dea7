// knn_graph on CPU: the k nearest sources j of every target i in its graph by (distance, index), the
// distance sqrt(dx*dx + dy*dy + dz*dz), d = pos_j - pos_i, evaluated in the input dtype exactly as
// pamnet_fast/ops/reference.py does; optionally only sources with distance <= r. Output sorted by target
// then source (not by distance), with a CSR pointer over targets.
//
// Algorithm. A cell list (cell_list.h) sized for a few atoms per cell. Each target visits shells of cells
// around its own (Chebyshev distance 0, 1, 2, ... in cells), keeping the k best candidates, and stops once
// a lower bound on the distance of every unvisited atom is strictly above the k-th best (strictly: an
// unvisited atom at the same distance with a smaller index would win the tie) or above r.
// Without r every target has exactly min(k, n_g - 1) (or n_g with loops) sources, so the pointer is known
// and one pass writes the output; with r a first pass counts.
#include "cpu/cell_list.h"
#include "cpu/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>
#include <vector>

namespace pamnet_fast {
namespace cpu {
namespace {

constexpr int64_t kBruteForce = 32;  // atoms

template <typename scalar_t>
struct KnnSearch {
  using Candidate = std::pair<scalar_t, int64_t>;  // (distance, source): the reference's order

  const CellList<scalar_t>& cells;
  const std::vector<int64_t>& graph_of;
  const int64_t* batch_ptr;
  const scalar_t* pos;
  int64_t k;
  bool loop;
  bool has_r;
  scalar_t r;

  // Lower bound on the rounded distance of atoms at true distance >= d: the float32 formula can fall short
  // of the true distance by a few ulps, or by ~1e-22 when squares underflow.
  static double rounded_below(double d) {
    return d * (1 - 1e-5) - (sizeof(scalar_t) == 4 ? 1e-20 : 1e-150);
  }

  // Leaves in best the (at most k) nearest sources of target i, in no particular order.
  void nearest(int64_t i, std::vector<Candidate>& best) const {
    best.clear();
    const int64_t g = graph_of[i];
    const int64_t cap = std::min(k, batch_ptr[g + 1] - batch_ptr[g] - (loop ? 0 : 1));
    if (cap <= 0) return;
    const Grid& grid = cells.grids[g];
    const scalar_t p[3] = {pos[3 * i], pos[3 * i + 1], pos[3 * i + 2]};
    const double q[3] = {p[0] - grid.origin[0], p[1] - grid.origin[1], p[2] - grid.origin[2]};
    int64_t c[3];
    int64_t local = cells.node_cell[i] - grid.offset;
    for (int a = 0; a < 3; ++a) {
      c[a] = local % grid.dims[a];
      local /= grid.dims[a];
    }
    // Distance from atom i to the slab of cells at offset d along axis a.
    auto gap = [&](int a, int64_t d) { return grid.gap(q[a], c[a] + d, a); };

    // Candidates are appended to best and, when there are many, cut to the cap nearest (nth_element),
    // which fixes the k-th distance so far: nothing farther than limit can enter any more.
    constexpr double inf = std::numeric_limits<double>::infinity();
    double limit = has_r ? static_cast<double>(r) : inf;
    double limit2 = inf;  // a loose form of `sqrt(d2) <= limit` on squares, sparing most atoms the sqrt
    auto cut = [&]() {
      if (static_cast<int64_t>(best.size()) < cap) return;
      std::nth_element(best.begin(), best.begin() + (cap - 1), best.end());
      best.resize(cap);
      limit = std::min(limit, static_cast<double>(best.back().first));
      limit2 = limit * limit * (1 + 1e-6) + 1e-300;
    };
    if (has_r) limit2 = limit * limit * (1 + 1e-6) + 1e-300;
    const scalar_t *x = cells.x.data(), *y = cells.y.data(), *z = cells.z.data();
    const int64_t* index = cells.index.data();
    constexpr int64_t kChunk = 64;
    scalar_t d2[kChunk];
    auto scan = [&](int64_t cell0, int64_t cell1) {
      const int64_t end = cells.cell_start[cell1 + 1];
      for (int64_t s0 = cells.cell_start[cell0]; s0 < end; s0 += kChunk) {
        // Squared distances of a chunk (vectorized), then the screen.
        const int64_t len = std::min(end - s0, kChunk);
        for (int64_t t = 0; t < len; ++t) {
          const scalar_t dx = x[s0 + t] - p[0], dy = y[s0 + t] - p[1], dz = z[s0 + t] - p[2];
          d2[t] = dx * dx + dy * dy + dz * dz;
        }
        for (int64_t t = 0; t < len; ++t) {
          if (static_cast<double>(d2[t]) > limit2) continue;
          const scalar_t d = std::sqrt(d2[t]);
          if ((!loop && index[s0 + t] == i) || (has_r && !(d <= r))) continue;
          best.emplace_back(d, index[s0 + t]);
        }
      }
      if (static_cast<int64_t>(best.size()) >= 2 * cap + 64) cut();
    };

    int64_t last_shell = 0;  // the shell that reaches the farthest cell of the grid
    for (int a = 0; a < 3; ++a) last_shell = std::max({last_shell, c[a], grid.dims[a] - 1 - c[a]});
    for (int64_t s = 0;; ++s) {
      // Shell s: the cells whose largest offset is s. Full x-rows on its top/bottom/front/back faces, the
      // two end cells elsewhere. Rows already farther than the limit are skipped.
      for (int64_t dz = std::max(-s, -c[2]); dz <= std::min(s, grid.dims[2] - 1 - c[2]); ++dz) {
        const double gz = dz == 0 ? 0.0 : gap(2, dz);
        for (int64_t dy = std::max(-s, -c[1]); dy <= std::min(s, grid.dims[1] - 1 - c[1]); ++dy) {
          const double gy = dy == 0 ? 0.0 : gap(1, dy);
          if (rounded_below(std::sqrt(gz * gz + gy * gy)) > limit) continue;
          const int64_t row = grid.id(0, c[1] + dy, c[2] + dz);
          if (std::abs(dz) == s || std::abs(dy) == s) {
            scan(row + std::max(c[0] - s, int64_t{0}), row + std::min(c[0] + s, grid.dims[0] - 1));
          } else {
            if (c[0] - s >= 0) scan(row + c[0] - s, row + c[0] - s);
            if (c[0] + s < grid.dims[0]) scan(row + c[0] + s, row + c[0] + s);
          }
        }
      }
      cut();
      if (s >= last_shell) return;
      // Every unvisited atom is at least `nearest` away along some axis: done when that is beyond the
      // limit (strictly: an atom exactly at the k-th distance with a smaller index would still win).
      double nearest = inf;
      for (int a = 0; a < 3; ++a) {
        if (c[a] - s - 1 >= 0) nearest = std::min(nearest, gap(a, -s - 1));
        if (c[a] + s + 1 < grid.dims[a]) nearest = std::min(nearest, gap(a, s + 1));
      }
      if (rounded_below(nearest) > limit) return;
    }
  }
};

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> knn_impl(const at::Tensor& pos_t, int64_t k,
                                            const at::Tensor& batch_ptr_t, bool has_r, double r,
                                            bool loop) {
  const int64_t n = pos_t.size(0);
  const int64_t num_graphs = batch_ptr_t.numel() - 1;
  const scalar_t* pos = pos_t.data_ptr<scalar_t>();
  const int64_t* batch_ptr = batch_ptr_t.data_ptr<int64_t>();
  const scalar_t r_s = static_cast<scalar_t>(has_r ? r : 0.0);

  // About max(2, k / 4) atoms per cell: the k nearest then mostly lie within the first two shells. Small
  // graphs get one cell (brute force beats visiting cells); with a small r, cells about r wide instead (never
  // more than ~2 per atom).
  const double per_cell = std::max<double>(2.0, static_cast<double>(k) / 4);
  const double reach = static_cast<double>(r_s) * (1 + 1e-5);
  const CellList<scalar_t> cells =
      build_cell_list(pos, batch_ptr, num_graphs, [&](const double ext[3], int64_t atoms, double edge[3]) {
        const double dense = edge_for(ext, 0.0, atoms <= kBruteForce ? 1.0 : atoms / per_cell);
        edge[0] = edge[1] = edge[2] = has_r && reach < dense ? edge_for(ext, reach, 2.0 * atoms + 8) : dense;
      });
  const std::vector<int64_t> graph_of = node_graph(batch_ptr, num_graphs);
  const KnnSearch<scalar_t> search{cells, graph_of, batch_ptr, pos, k, loop, has_r, r_s};

  // Targets in cell order, for locality; emit(i, best) gets each target's nearest sources.
  const int64_t num_cells = static_cast<int64_t>(cells.cell_start.size()) - 1;
  auto for_each_target = [&](auto&& emit) {
    at::parallel_for(0, num_cells, 16, [&](int64_t c0, int64_t c1) {
      std::vector<typename KnnSearch<scalar_t>::Candidate> best;
      for (int64_t s = cells.cell_start[c0]; s < cells.cell_start[c1]; ++s) {
        search.nearest(cells.index[s], best);
        emit(cells.index[s], best);
      }
    });
  };

  at::Tensor ptr_t = at::empty({n + 1}, pos_t.options().dtype(at::kLong));
  int64_t* ptr = ptr_t.data_ptr<int64_t>();
  ptr[0] = 0;
  if (has_r) {
    for_each_target([&](int64_t i, const auto& best) { ptr[i + 1] = static_cast<int64_t>(best.size()); });
  } else {
    for (int64_t g = 0; g < num_graphs; ++g) {
      const int64_t size = batch_ptr[g + 1] - batch_ptr[g];
      const int64_t count = std::max<int64_t>(0, std::min(k, size - (loop ? 0 : 1)));
      std::fill(ptr + batch_ptr[g] + 1, ptr + batch_ptr[g + 1] + 1, count);
    }
  }
  for (int64_t i = 0; i < n; ++i) ptr[i + 1] += ptr[i];

  const int64_t num_edges = ptr[n];
  at::Tensor edge_index = at::empty({2, num_edges}, ptr_t.options());
  int64_t* src = edge_index.data_ptr<int64_t>();
  int64_t* dst = src + num_edges;
  for_each_target([&](int64_t i, const auto& best) {
    int64_t* out = src + ptr[i];
    for (const auto& cand : best) *out++ = cand.second;
    std::sort(src + ptr[i], out);
    std::fill(dst + ptr[i], dst + ptr[i + 1], i);
  });
  return std::make_tuple(edge_index, ptr_t);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> knn_graph_kernel(const at::Tensor& pos, int64_t k,
                                                    const at::Tensor& batch_ptr, bool has_r, double r,
                                                    bool loop) {
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "knn_graph", [&] {
    out = knn_impl<scalar_t>(pos, k, batch_ptr, has_r, r, loop);
  });
  return out;
}

}  // namespace cpu
}  // namespace pamnet_fast
