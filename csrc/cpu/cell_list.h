// Cell lists shared by the radius and knn kernels: each graph of a batch gets its own uniform grid over its
// bounding box, and its atoms are counting-sorted by cell into cell-ordered copies of the coordinates, so
// that the atoms of a row of cells are contiguous in memory. Linear time and memory: no grid is larger than
// about twice its graph, so batches of many small graphs and sparse huge ones cost O(N).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace pamnet_fast {
namespace cpu {

// Grid of one graph. Cell (cx, cy, cz) has the global id offset + (cz * dims[1] + cy) * dims[0] + cx, so the
// cells of an x-row are consecutive and so are their atoms. Edges may differ per axis. Geometry is done in
// double on coordinates local to the grid (x - origin), where rounding errors are relative to the extent of
// the graph, not to the magnitude of the coordinates; slack covers them.
struct Grid {
  double origin[3];
  double edge[3];
  double inv_edge[3];
  double slack[3];
  int64_t dims[3];
  int64_t offset;

  int64_t id(int64_t cx, int64_t cy, int64_t cz) const {
    return offset + (cz * dims[1] + cy) * dims[0] + cx;
  }
  // Cell along axis a of the local coordinate t, clamped: huge values cannot overflow, and the top face of
  // the box lands in the last cell. Monotone in t. Branch-free (max, min, truncation, which is floor on the
  // positive range): these run for every row of cells searched, with unpredictable outcomes.
  int64_t cell(double t, int a) const {
    double c = t * inv_edge[a];
    c = c > 0 ? c : 0.0;  // NaN (0 * inf) too
    const double top = static_cast<double>(dims[a] - 1);
    return static_cast<int64_t>(c < top ? c : top);
  }
  // Lower bound on the distance along axis a from local coordinate t to the atoms of cell c.
  double gap(double t, int64_t c, int a) const {
    if (dims[a] == 1) return 0;
    const double lo = static_cast<double>(c) * edge[a] - slack[a];
    const double hi = static_cast<double>(c + 1) * edge[a] + slack[a];
    const double d = lo - t > t - hi ? lo - t : t - hi;
    return d > 0 ? d : 0.0;
  }
};

// Number of cells of a cubic grid of edge h over a box of extents ext (a double: may be astronomical).
inline double num_cells(const double ext[3], double h) {
  double n = 1.0;
  for (int a = 0; a < 3; ++a) n *= std::floor(ext[a] / h) + 1.0;
  return n;
}

// Smallest cubic edge >= min_edge (up to 0.1%) whose grid has at most max_cells cells: bisection in log
// space.
inline double edge_for(const double ext[3], double min_edge, double max_cells) {
  const double longest = std::max({ext[0], ext[1], ext[2]});
  double hi = longest * 1.001 + 1e-300;  // one cell per axis
  if (!(min_edge < hi)) return min_edge;  // also catches min_edge = inf
  double lo = min_edge > 0 ? min_edge : hi * 1e-12;
  if (num_cells(ext, lo) <= max_cells) return lo;
  for (int it = 0; it < 200 && hi > lo * 1.001; ++it) {
    const double mid = std::sqrt(lo * hi);
    (num_cells(ext, mid) <= max_cells ? hi : lo) = mid;
  }
  return hi;
}

template <typename scalar_t>
struct CellList {
  std::vector<Grid> grids;          // [G]
  std::vector<int64_t> cell_start;  // [cells + 1]: slots of each cell (graph g owns slots batch_ptr[g]..)
  std::vector<int64_t> node_cell;   // [N] global cell id of each node
  std::vector<int64_t> index;       // [N] original index of each slot; ascending within a cell
  std::vector<scalar_t> x, y, z;    // [N] cell-ordered coordinates
};

// choose_edges(ext, n, edge) sets the cell edges of a graph of n atoms whose bounding box has extents ext.
template <typename scalar_t, typename ChooseEdges>
CellList<scalar_t> build_cell_list(const scalar_t* pos, const int64_t* batch_ptr, int64_t num_graphs,
                                   ChooseEdges choose_edges) {
  CellList<scalar_t> cl;
  const int64_t n = batch_ptr[num_graphs] - batch_ptr[0];
  cl.grids.resize(num_graphs);
  std::vector<int64_t> num(num_graphs + 1, 0);
  // Many small graphs are spread over threads; a single big one is one serial O(n) pass.
  const int64_t grain = std::max<int64_t>(1, num_graphs * 2048 / std::max<int64_t>(n, 1));

  at::parallel_for(0, num_graphs, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      double lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
      for (int64_t i = batch_ptr[g]; i < batch_ptr[g + 1]; ++i) {
        for (int a = 0; a < 3; ++a) {
          const double v = pos[3 * i + a];
          lo[a] = i == batch_ptr[g] ? v : std::min(lo[a], v);
          hi[a] = i == batch_ptr[g] ? v : std::max(hi[a], v);
        }
      }
      Grid& grid = cl.grids[g];
      double ext[3];
      for (int a = 0; a < 3; ++a) {
        ext[a] = hi[a] - lo[a];
        if (!std::isfinite(ext[a])) ext[a] = 0;  // (double input near +-DBL_MAX) one cell on that axis
        grid.origin[a] = lo[a];
      }
      choose_edges(ext, batch_ptr[g + 1] - batch_ptr[g], grid.edge);
      for (int a = 0; a < 3; ++a) {
        grid.inv_edge[a] = 1 / grid.edge[a];
        grid.dims[a] = ext[a] > 0 ? static_cast<int64_t>(std::floor(ext[a] / grid.edge[a])) + 1 : 1;
        // Local coordinates are off by a few ulps of the extent, at most ~dims * edge.
        grid.slack[a] = 1e-12 * static_cast<double>(grid.dims[a] + 2) * grid.edge[a];
      }
      num[g + 1] = grid.dims[0] * grid.dims[1] * grid.dims[2];
    }
  });
  for (int64_t g = 0; g < num_graphs; ++g) {
    cl.grids[g].offset = num[g];
    num[g + 1] += num[g];
  }

  cl.cell_start.assign(num[num_graphs] + 1, 0);
  cl.node_cell.resize(n);
  cl.index.resize(n);
  cl.x.resize(n);
  cl.y.resize(n);
  cl.z.resize(n);
  std::vector<int64_t> cursor(num[num_graphs], 0);
  at::parallel_for(0, num_graphs, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const Grid& grid = cl.grids[g];
      const int64_t c0 = num[g], c1 = num[g + 1];
      for (int64_t i = batch_ptr[g]; i < batch_ptr[g + 1]; ++i) {
        const scalar_t* p = pos + 3 * i;
        const int64_t c = grid.id(grid.cell(p[0] - grid.origin[0], 0), grid.cell(p[1] - grid.origin[1], 1),
                                  grid.cell(p[2] - grid.origin[2], 2));
        cl.node_cell[i] = c;
        ++cursor[c];
      }
      // Counting sort, stable: atoms stay in ascending original order inside each cell. Each graph writes
      // only its own cells' entries, so graphs can run concurrently.
      int64_t start = batch_ptr[g];
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t count = cursor[c];
        cl.cell_start[c] = cursor[c] = start;
        start += count;
      }
      for (int64_t i = batch_ptr[g]; i < batch_ptr[g + 1]; ++i) {
        const int64_t s = cursor[cl.node_cell[i]]++;
        cl.index[s] = i;
        cl.x[s] = pos[3 * i];
        cl.y[s] = pos[3 * i + 1];
        cl.z[s] = pos[3 * i + 2];
      }
    }
  });
  cl.cell_start[num[num_graphs]] = batch_ptr[num_graphs];
  return cl;
}

// Graph of each node: batch_ptr expanded to [N].
inline std::vector<int64_t> node_graph(const int64_t* batch_ptr, int64_t num_graphs) {
  std::vector<int64_t> out(batch_ptr[num_graphs]);
  for (int64_t g = 0; g < num_graphs; ++g)
    std::fill(out.begin() + batch_ptr[g], out.begin() + batch_ptr[g + 1], g);
  return out;
}

}  // namespace cpu
}  // namespace pamnet_fast
