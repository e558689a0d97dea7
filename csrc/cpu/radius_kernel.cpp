// radius_graph on CPU: all pairs j -> i of the same graph with sqrt(dx*dx + dy*dy + dz*dz) <= r, d = pos_j -
// pos_i evaluated in the input dtype exactly as pamnet_fast/ops/reference.py does, sorted by target then
// source, with a CSR pointer over targets.
//
// Algorithm. A cell list (cell_list.h); the neighbors of an atom are searched in the rows of cells that
// meet the ball of radius r around it. The neighbor relation is symmetric (the distances of i to j and of j
// to i are the same bits), which gives the output order for free: visiting the sources j in ascending order
// and appending j to the list of each of its neighbors i leaves every list sorted, with no per-target sort.
// Threads take contiguous blocks of sources, so the list of target i is the concatenation of the parts
// written by blocks 0, 1, ...; a first pass counts the part of every (block, target), which fixes where
// each block writes, and a second pass writes. Deterministic, no atomics, output allocated once.
//
// max_num_neighbors with truncate: the targets over the limit are filled apart, keeping the nearest by
// (distance, source) as the reference does.
#include "cpu/cell_list.h"
#include "cpu/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace pamnet_fast {
namespace cpu {
namespace {

// Cells are reach wide along y and z but thinner along x, down to reach / kSlicesX (see radius_impl).
constexpr double kSlicesX = 8;

// Largest s with sqrt(s) <= r in scalar_t. The correctly rounded sqrt is monotone, so `sqrt(s) <= r` iff
// `s <= threshold`, bit for bit; the inner loops compare squared distances and never take a sqrt.
template <typename scalar_t>
scalar_t squared_threshold(scalar_t r) {
  const scalar_t inf = std::numeric_limits<scalar_t>::infinity();
  scalar_t t = r * r;
  while (t > 0 && std::sqrt(t) > r) t = std::nextafter(t, scalar_t(0));
  while (t < inf && std::sqrt(std::nextafter(t, inf)) <= r) t = std::nextafter(t, inf);
  return t;
}

// Python's str(float): the shortest digits that round-trip, positional for exponents in [-4, 16).
std::string python_float_str(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::isnan(v)) return "nan";
  char buf[64];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*e", digits - 1, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  const std::string s(buf);
  const size_t e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (size_t k = 0; k < e; ++k)
    if (std::isdigit(static_cast<unsigned char>(s[k]))) digits += s[k];
  const std::string sign = s[0] == '-' ? "-" : "";
  if (exp < -4 || exp >= 16) {
    const std::string frac = digits.size() > 1 ? "." + digits.substr(1) : "";
    char e_buf[16];
    std::snprintf(e_buf, sizeof(e_buf), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return sign + digits.substr(0, 1) + frac + e_buf;
  }
  if (exp < 0) return sign + "0." + std::string(-exp - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exp + 1)
    return sign + digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  return sign + digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
}

// Atoms within r of a given atom, from the cell list.
template <typename scalar_t>
struct RadiusSearch {
  const CellList<scalar_t>& cells;
  const std::vector<int64_t>& graph_of;
  const scalar_t* pos;
  scalar_t r2;   // squared_threshold(r)
  double reach;  // > r by more than the rounding of the distance: no pair within r is farther apart

  // Calls row(first, last) for each x-row of cells first..last (consecutive global ids, so one contiguous
  // run of slots) that intersects the ball of radius reach around atom i, i.e. that may hold its neighbors.
  template <typename F>
  void for_each_row(int64_t i, F&& row) const {
    const Grid& grid = cells.grids[graph_of[i]];
    const double q[3] = {pos[3 * i] - grid.origin[0], pos[3 * i + 1] - grid.origin[1],
                         pos[3 * i + 2] - grid.origin[2]};
    const double reach2 = reach * reach;
    const double wz = reach + grid.slack[2];
    const int64_t z1 = grid.cell(q[2] + wz, 2);
    for (int64_t cz = grid.cell(q[2] - wz, 2); cz <= z1; ++cz) {
      const double gz = grid.gap(q[2], cz, 2), rz2 = reach2 - gz * gz;
      if (rz2 < 0) continue;
      const double wy = std::sqrt(rz2) + grid.slack[1];
      const int64_t y1 = grid.cell(q[1] + wy, 1);
      for (int64_t cy = grid.cell(q[1] - wy, 1); cy <= y1; ++cy) {
        const double gy = grid.gap(q[1], cy, 1), ry2 = rz2 - gy * gy;
        if (ry2 < 0) continue;
        const double wx = std::sqrt(ry2) + grid.slack[0];
        const int64_t id = grid.id(0, cy, cz);
        row(id + grid.cell(q[0] - wx, 0), id + grid.cell(q[0] + wx, 0));
      }
    }
  }

  // Number of slots in [s0, s1) within r of p. Vectorizes: no sqrt, no branch.
  int64_t count(const scalar_t* p, int64_t s0, int64_t s1) const {
    const scalar_t *x = cells.x.data(), *y = cells.y.data(), *z = cells.z.data();
    int32_t c = 0;
    for (int64_t s = s0; s < s1; ++s) {
      const scalar_t dx = x[s] - p[0], dy = y[s] - p[1], dz = z[s] - p[2];
      c += dx * dx + dy * dy + dz * dz <= r2;
    }
    return c;
  }

  // Writes to out the slots in [s0, s1) within r of p, in slot order, and returns their number m; out[m]
  // may be overwritten. Chunks of squared distances (vectorized), then a branch-free compaction.
  int64_t collect(const scalar_t* p, int64_t s0, int64_t s1, int64_t* out) const {
    constexpr int64_t kChunk = 64;
    scalar_t d2[kChunk];
    int64_t m = 0;
    for (; s0 < s1; s0 += kChunk) {
      const int64_t len = std::min(s1 - s0, kChunk);
      const scalar_t *x = cells.x.data() + s0, *y = cells.y.data() + s0, *z = cells.z.data() + s0;
      for (int64_t t = 0; t < len; ++t) {
        const scalar_t dx = x[t] - p[0], dy = y[t] - p[1], dz = z[t] - p[2];
        d2[t] = dx * dx + dy * dy + dz * dz;
      }
      for (int64_t t = 0; t < len; ++t) {
        out[m] = s0 + t;
        m += d2[t] <= r2;
      }
    }
    return m;
  }

  // Writes to out the slots within r of atom i (itself included); returns their number.
  int64_t neighbors(int64_t i, int64_t* out) const {
    int64_t m = 0;
    for_each_row(i, [&](int64_t c0, int64_t c1) {
      m += collect(pos + 3 * i, cells.cell_start[c0], cells.cell_start[c1 + 1], out + m);
    });
    return m;
  }
};

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> radius_impl(const at::Tensor& pos_t, double r,
                                               const at::Tensor& batch_ptr_t, bool loop,
                                               int64_t max_num_neighbors, bool truncate) {
  const int64_t n = pos_t.size(0);
  const int64_t num_graphs = batch_ptr_t.numel() - 1;
  const scalar_t* pos = pos_t.data_ptr<scalar_t>();
  const int64_t* batch_ptr = batch_ptr_t.data_ptr<int64_t>();

  // The float32 distance of a pair within r can exceed its true separation by a few ulps, or by up to
  // ~1e-22 when the squares underflow; reach covers both with a wide margin.
  const scalar_t r_s = static_cast<scalar_t>(r);
  const double tiny = sizeof(scalar_t) == 4 ? 1e-20 : 1e-150;
  const double reach = static_cast<double>(r_s) * (1 + 1e-5) + tiny;
  // Cells reach wide along y and z, or wider in sparse graphs (each row of cells costs about as much as
  // screening a few tens of atoms: ~4 atoms per reach-wide cube at least), and thinner along x, down to
  // reach / kSlicesX: the x-range of each row is then trimmed close to the ball at no cost, since a row is
  // one run of slots whatever its number of cells (a third fewer candidates than cubic cells on proteins).
  // At most ~2 cells per atom in all.
  const CellList<scalar_t> cells =
      build_cell_list(pos, batch_ptr, num_graphs, [&](const double ext[3], int64_t atoms, double edge[3]) {
        const double max_cells = 2.0 * atoms + 8;
        const double h = edge_for(ext, reach, 0.25 * atoms + 1);
        const double rows = (std::floor(ext[1] / h) + 1) * (std::floor(ext[2] / h) + 1);
        const double nx = std::floor(max_cells / rows);
        edge[0] = nx >= 2 ? std::min(h, std::max(h / kSlicesX, ext[0] / (nx - 1) * (1 + 1e-9))) : h;
        edge[1] = edge[2] = h;
      });
  const std::vector<int64_t> graph_of = node_graph(batch_ptr, num_graphs);
  const RadiusSearch<scalar_t> search{cells, graph_of, pos, squared_threshold(r_s), reach};
  const int64_t* index = cells.index.data();
  const int64_t* cell_start = cells.cell_start.data();

  // Sources are split into contiguous blocks of indices, one per thread of pass 2.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>({at::get_num_threads(), 16, n}));
  const int64_t block_size = std::max<int64_t>(1, (n + blocks - 1) / blocks);

  // Pass 1, by target in cell order: count[b * n + i] = number of sources of target i in block b. Rows of
  // slots are cut where the block changes (rarely: nearby atoms tend to have nearby indices); block[s] is
  // the block of slot s, same_block[s] the end of the run of slots from s in that block.
  std::vector<int64_t> block(n), same_block(n);
  for (int64_t s = n - 1; s >= 0; --s) {
    block[s] = index[s] / block_size;
    same_block[s] = s + 1 < n && block[s + 1] == block[s] ? same_block[s + 1] : s + 1;
  }
  std::vector<int64_t> count(blocks * n, 0);
  at::parallel_for(0, n, 256, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = index[t];
      const scalar_t* p = pos + 3 * i;
      search.for_each_row(i, [&](int64_t c0, int64_t c1) {
        for (int64_t s = cell_start[c0], end = cell_start[c1 + 1]; s < end;) {
          const int64_t e = std::min(same_block[s], end);
          count[block[s] * n + i] += search.count(p, s, e);
          s = e;
        }
      });
      if (!loop) --count[(i / block_size) * n + i];  // itself, at distance 0
    }
  });

  std::vector<int64_t> total(n, 0);
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t i = i0; i < i1; ++i) total[i] += count[b * n + i];
  });
  const int64_t max_count = n > 0 ? *std::max_element(total.begin(), total.end()) : 0;
  const bool over = max_num_neighbors >= 0 && max_count > max_num_neighbors;
  TORCH_CHECK_VALUE(!over || truncate, "radius_graph: a node has ", max_count, " neighbors within r=",
                    python_float_str(r), ", more than max_num_neighbors=", max_num_neighbors,
                    "; raise max_num_neighbors or pass truncate=True to keep the nearest ones");

  at::Tensor ptr_t = at::empty({n + 1}, pos_t.options().dtype(at::kLong));
  int64_t* ptr = ptr_t.data_ptr<int64_t>();
  ptr[0] = 0;
  for (int64_t i = 0; i < n; ++i)
    ptr[i + 1] = ptr[i] + (over ? std::min(total[i], max_num_neighbors) : total[i]);
  const int64_t num_edges = ptr[n];
  at::Tensor edge_index = at::empty({2, num_edges}, ptr_t.options());
  int64_t* src = edge_index.data_ptr<int64_t>();
  int64_t* dst = src + num_edges;

  // count becomes cursor: where block b writes its next source of target i (-1: target filled apart).
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t at = ptr[i];
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t c = count[b * n + i];
        count[b * n + i] = over && total[i] > max_num_neighbors ? -1 : at;
        at += c;
      }
    }
  });
  // Row 1, by chunks of edges (a few targets may own most of them).
  at::parallel_for(0, num_edges, 1 << 16, [&](int64_t e0, int64_t e1) {
    int64_t i = std::upper_bound(ptr, ptr + n + 1, e0) - ptr - 1;
    for (int64_t e = e0; e < e1; ++e) {
      while (ptr[i + 1] <= e) ++i;
      dst[e] = i;
    }
  });

  // Pass 2: each block takes its sources in ascending order and appends them to their targets' lists.
  // Symmetry again: an atom has at most max_count + 1 atoms within r, itself included; collect() may write
  // one slot past its hits.
  const int64_t max_hits = max_count + 2;
  auto fill = [&](auto skip_truncated) {
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<int64_t> hits(max_hits);
      // Local copies: the compiler cannot tell that the stores to out leave them unchanged.
      int64_t* const out = src;
      const int64_t* const slot_index = index;
      const bool skip_self = !loop;
      for (int64_t b = b0; b < b1; ++b) {
        int64_t* const cursor = count.data() + b * n;
        for (int64_t j = b * block_size; j < std::min(n, (b + 1) * block_size); ++j) {
          const int64_t m = search.neighbors(j, hits.data());
          for (int64_t k = 0; k < m; ++k) {
            const int64_t i = slot_index[hits[k]];
            if ((skip_self && i == j) || (decltype(skip_truncated)::value && cursor[i] < 0)) continue;
            out[cursor[i]++] = j;
          }
        }
      }
    });
  };
  if (over) {
    fill(std::true_type{});
  } else {
    fill(std::false_type{});
  }

  if (over) {
    // Truncated targets: the max_num_neighbors nearest by (distance, source), then by source.
    std::vector<int64_t> cut;
    for (int64_t i = 0; i < n; ++i)
      if (total[i] > max_num_neighbors) cut.push_back(i);
    at::parallel_for(0, static_cast<int64_t>(cut.size()), 16, [&](int64_t t0, int64_t t1) {
      std::vector<int64_t> hits(max_hits);
      std::vector<std::pair<scalar_t, int64_t>> cand;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = cut[t];
        const scalar_t* p = pos + 3 * i;
        cand.clear();
        const int64_t m = search.neighbors(i, hits.data());
        for (int64_t k = 0; k < m; ++k) {
          const int64_t s = hits[k];
          if (!loop && index[s] == i) continue;
          const scalar_t dx = cells.x[s] - p[0], dy = cells.y[s] - p[1], dz = cells.z[s] - p[2];
          cand.emplace_back(std::sqrt(dx * dx + dy * dy + dz * dz), index[s]);
        }
        std::nth_element(cand.begin(), cand.begin() + max_num_neighbors, cand.end());
        std::sort(cand.begin(), cand.begin() + max_num_neighbors,
                  [](const auto& a, const auto& b) { return a.second < b.second; });
        for (int64_t k = 0; k < max_num_neighbors; ++k) src[ptr[i] + k] = cand[k].second;
      }
    });
  }
  return std::make_tuple(edge_index, ptr_t);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> radius_graph_kernel(const at::Tensor& pos, double r,
                                                       const at::Tensor& batch_ptr, bool loop,
                                                       int64_t max_num_neighbors, bool truncate) {
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "radius_graph", [&] {
    out = radius_impl<scalar_t>(pos, r, batch_ptr, loop, max_num_neighbors, truncate);
  });
  return out;
}

}  // namespace cpu
}  // namespace pamnet_fast
