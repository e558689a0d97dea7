"""Plain-PyTorch reference twins of every fused op: the readable specification.

Each function here has the same signature and returns the same tensors as the op of the same name in
``torch.ops.pamnet_fast`` (the fused C++/Triton kernels). They are brute force (O(N^2) neighbor search) or
built from ``index_select``/``index_add_``, so they are slow but obviously right. Tests compare every backend
against them. Inputs are assumed valid here; the public wrappers in :mod:`pamnet_fast.ops` and the data
checks in :mod:`pamnet_fast.ops.checks` reject bad ones.

Conventions (PyG): ``edge_index[0]`` is the source j, ``edge_index[1]`` the target i, messages flow j -> i.
Edge lists are sorted by target, then source; ``ptr`` is the CSR pointer over targets (``[N + 1]``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .geometry import correctly_rounded_sqrt, pair_distance, squared_distance  # noqa: F401

# Rows of targets processed at once by the brute-force neighbor search (memory: chunk x N floats).
_CHUNK = 1024


def _graph_ranges(num_nodes: int, batch: Optional[Tensor]):
    if batch is None:
        return [(0, num_nodes)]
    counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if batch.numel() else 0)
    bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
    return [(bounds[g], bounds[g + 1]) for g in range(len(bounds) - 1) if bounds[g + 1] > bounds[g]]


def _ptr_from_targets(target: Tensor, num_nodes: int) -> Tensor:
    counts = torch.bincount(target, minlength=num_nodes)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _nearest_first(dist: Tensor, cols: Tensor) -> Tensor:
    """Order of candidates by (distance, index): ties broken by the smaller index."""
    order = torch.argsort(cols, stable=True)
    return order[torch.argsort(dist[order], stable=True)]


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, loop: bool = False,
                 max_num_neighbors: int = -1, truncate: bool = False) -> Tuple[Tensor, Tensor]:
    """All pairs (j -> i) of the same graph with ``pair_distance(pos_i, pos_j) <= r``.

    Returns ``edge_index [2, E]`` (int64, sorted by target then source) and ``ptr [N + 1]``.
    ``max_num_neighbors`` (``-1``: unlimited): a target with more neighbors raises ``ValueError`` naming the
    largest count, unless ``truncate``, which keeps the nearest ones (ties by smaller index).
    """
    n = pos.size(0)
    r_t = torch.tensor(r, dtype=pos.dtype)
    rows, cols = [], []
    max_count = 0
    for start, end in _graph_ranges(n, batch):
        pos_g = pos[start:end]
        for c0 in range(start, end, _CHUNK):
            c1 = min(c0 + _CHUNK, end)
            dist = pair_distance(pos[c0:c1, None, :], pos_g[None, :, :])  # [chunk, n_g]
            mask = dist <= r_t
            if not loop:
                mask[torch.arange(c1 - c0), torch.arange(c0, c1) - start] = False
            counts = mask.sum(1)
            max_count = max(max_count, int(counts.max()))
            if 0 <= max_num_neighbors < int(counts.max()) and truncate:
                for t in (counts > max_num_neighbors).nonzero().view(-1).tolist():
                    nbr = mask[t].nonzero().view(-1)
                    drop = _nearest_first(dist[t, nbr], nbr)[max_num_neighbors:]
                    mask[t, nbr[drop]] = False
            t_idx, j_idx = mask.nonzero().unbind(1)  # row-major: by target, then source
            rows.append(j_idx + start)
            cols.append(t_idx + c0)
    if 0 <= max_num_neighbors < max_count and not truncate:
        raise ValueError(
            f"radius_graph: a node has {max_count} neighbors within r={r}, more than "
            f"max_num_neighbors={max_num_neighbors}; raise max_num_neighbors or pass truncate=True "
            f"to keep the nearest ones")
    src = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    dst = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)
    return torch.stack([src, dst]), _ptr_from_targets(dst, n)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None, r: Optional[float] = None,
              loop: bool = False) -> Tuple[Tensor, Tensor]:
    """The ``k`` nearest sources of each target in its graph (ties by smaller index), within ``r`` if
    given (``pair_distance <= r``). Fewer candidates than ``k``: all of them. Sorted by target then source.
    """
    n = pos.size(0)
    rows, cols = [], []
    for start, end in _graph_ranges(n, batch):
        pos_g = pos[start:end]
        for c0 in range(start, end, _CHUNK):
            c1 = min(c0 + _CHUNK, end)
            dist = pair_distance(pos[c0:c1, None, :], pos_g[None, :, :])
            for t in range(c1 - c0):
                cand = torch.arange(end - start)
                keep = torch.ones(end - start, dtype=torch.bool)
                if not loop:
                    keep[c0 + t - start] = False
                if r is not None:
                    keep &= dist[t] <= torch.tensor(r, dtype=pos.dtype)
                cand = cand[keep]
                nbr = cand[_nearest_first(dist[t, cand], cand)[:k]].sort().values
                rows.append(nbr + start)
                cols.append(torch.full_like(nbr, c0 + t))
    src = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    dst = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)
    return torch.stack([src, dst]), _ptr_from_targets(dst, n)


def triplets(edge_index: Tensor, num_nodes: int, include_self_pairs: bool = False
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Angle triplets of a target-sorted edge list (``edge_index[1]`` non-decreasing).

    two-hop: every pair of edges (k -> j, j -> i) with k != i, as ``(idx_kj, idx_ji)``;
    one-hop: every pair of edges (j2 -> i, j -> i) into the same target, as ``(idx_j2i, idx_ji)``, the pair
    of an edge with itself only if ``include_self_pairs`` (as the authors' PAMNet code does).
    Both lists are sorted by the receiving edge ``idx_ji`` (then by the other edge) and come with a CSR
    pointer over edges (``[E + 1]``), so summing triplet terms onto edges is a segment sum.

    Returns ``(two_hop_kj, two_hop_ji, two_hop_ptr, one_hop_j2i, one_hop_ji, one_hop_ptr)``, all int64.
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    num_edges = src.numel()
    node_ptr = _ptr_from_targets(dst, num_nodes)
    deg = node_ptr[1:] - node_ptr[:-1]
    edge_ids = torch.arange(num_edges)

    def pairs_into(node: Tensor):
        # For each edge e, all edges into node[e], in edge order.
        counts = deg[node]
        recv = edge_ids.repeat_interleave(counts)
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(recv.numel()) - first.repeat_interleave(counts)
        return node_ptr[node].repeat_interleave(counts) + offset, recv

    kj, ji = pairs_into(src)  # edges k -> j for j = source of e
    keep = src[kj] != dst[ji]
    kj, ji = kj[keep], ji[keep]

    j2i, ji1 = pairs_into(dst)  # edges j2 -> i for i = target of e
    if not include_self_pairs:
        keep = j2i != ji1
        j2i, ji1 = j2i[keep], ji1[keep]
    return (kj, ji, _ptr_from_targets(ji, num_edges), j2i, ji1, _ptr_from_targets(ji1, num_edges))


def _segment_rows(ptr: Tensor) -> Tensor:
    """The segment of each entry of a CSR pointer ``ptr [R + 1]``: ``[ptr[-1]]``."""
    return torch.arange(ptr.numel() - 1, device=ptr.device).repeat_interleave(ptr[1:] - ptr[:-1])


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor) -> Tensor:
    """``out[r] = sum_{s in [ptr[r], ptr[r+1])} a[src[s]] * b[s]``; a: [M, F], b: [S, F], out: [R, F]."""
    out = a.new_zeros(ptr.numel() - 1, a.size(1))
    return out.index_add_(0, _segment_rows(ptr), a.index_select(0, src.long()) * b)


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                       edge_row: Optional[Tensor] = None) -> Tensor:
    """``out[i] = sum_{e in [ptr[i], ptr[i+1])} silu(p[i] + q[src[e]] + r[k]) * s[k]``, ``k = edge_row[e]``
    (default ``e``).

    p: [N, F] target projection, q: [M, F] source projection, r: [R, F] edge term, s: [R, F] gate.
    """
    out = p.new_zeros(ptr.numel() - 1, p.size(1))
    return out.index_add_(0, _segment_rows(ptr), edge_message(p, q, r, s, ptr, src, edge_row))


def edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                 edge_row: Optional[Tensor] = None) -> Tensor:
    """``out[e] = silu(p[i] + q[src[e]] + r[k]) * s[k]`` for each edge ``e in [ptr[i], ptr[i+1])``,
    ``k = edge_row[e]`` (default ``e``): the terms of :func:`fused_edge_message`, not summed. ``[E, F]``."""
    if edge_row is not None:
        r, s = r.index_select(0, edge_row.long()), s.index_select(0, edge_row.long())
    h = p.index_select(0, _segment_rows(ptr)) + q.index_select(0, src.long()) + r
    return torch.nn.functional.silu(h) * s


def envelope(x: Tensor, p: int) -> Tensor:
    """DimeNet's polynomial envelope u_p(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for
    x < 1, else 0. It and its first two derivatives vanish at x = 1. ``p`` is used as given."""
    a = -(p + 1) * (p + 2) / 2.0
    b = float(p * (p + 2))
    c = -p * (p + 1) / 2.0
    xp = x.pow(p)
    u = 1.0 + a * xp + b * xp * x + c * xp * x * x
    return torch.where(x < 1, u, torch.zeros_like(x))


def bessel_basis(dist: Tensor, freq: Tensor, cutoff: float, envelope_exponent: int) -> Tensor:
    """Radial Bessel basis times the envelope: ``out[e, n] = u_p(x) * sin(freq[n] x) / x``, x = d / cutoff.

    ``freq`` (learnable in DimeNet, initialised to n*pi) has shape [num_radial]; at x = 0 the value is the
    limit ``freq[n]``. Output [E, num_radial].
    """
    x = (dist / cutoff).unsqueeze(-1)
    fx = freq * x
    safe_x = torch.where(x == 0, torch.ones_like(x), x)
    ratio = torch.where(x == 0, freq.expand_as(fx), torch.sin(fx) / safe_x)
    return envelope(x, envelope_exponent) * ratio


def spherical_jn(order: int, z: Tensor) -> Tensor:
    """Spherical Bessel function of the first kind j_l(z), z >= 0 (power series for small z, upward
    recurrence above l, where it is stable)."""
    small = z < max(order, 1) + 0.5
    zs = torch.where(small, z, torch.zeros_like(z))
    # Power series: j_l(z) = z^l / (2l+1)!! * sum_k (-z^2/2)^k / (k! (2l+3)(2l+5)...(2l+2k+1)).
    term = torch.ones_like(z)
    series = torch.ones_like(z)
    for k in range(1, 30):
        term = term * (-zs * zs / 2.0) / (k * (2 * order + 2 * k + 1))
        series = series + term
    dfact = math.prod(range(1, 2 * order + 2, 2))
    series = series * zs.pow(order) / dfact
    zl = torch.where(small, torch.ones_like(z), z)
    j0 = torch.sin(zl) / zl
    if order == 0:
        rec = j0
    else:
        j1 = torch.sin(zl) / (zl * zl) - torch.cos(zl) / zl
        jm, jc = j0, j1
        for l in range(1, order):
            jm, jc = jc, (2 * l + 1) / zl * jc - jm
        rec = jc
    return torch.where(small, series, rec)


def spherical_bessel_zeros(num_spherical: int, num_radial: int) -> Tensor:
    """The first ``num_radial`` positive zeros z_ln of j_l for l < num_spherical, [L, N] float64.

    Zeros of j_l interlace those of j_(l-1), so each is bracketed by two consecutive zeros of the order
    below and found by bisection.
    """
    n_total = num_radial + num_spherical
    zeros = [torch.arange(1, n_total + 1, dtype=torch.float64) * math.pi]  # j_0 = sin(z)/z
    for order in range(1, num_spherical):
        prev = zeros[-1]
        lo, hi = prev[:-1].clone(), prev[1:].clone()
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            same = torch.sign(spherical_jn(order, mid)) == torch.sign(spherical_jn(order, lo))
            lo = torch.where(same, mid, lo)
            hi = torch.where(same, hi, mid)
        zeros.append(0.5 * (lo + hi))
    return torch.stack([z[:num_radial] for z in zeros])


def legendre(order: int, x: Tensor) -> Tensor:
    """Legendre polynomial P_l(x) by Bonnet's recurrence."""
    p0, p1 = torch.ones_like(x), x
    if order == 0:
        return p0
    for l in range(1, order):
        p0, p1 = p1, ((2 * l + 1) * x * p1 - l * p0) / (l + 1)
    return p1


def spherical_basis(dist: Tensor, angle: Tensor, zeros: Tensor, cutoff: float,
                    envelope_exponent: int) -> Tensor:
    """DimeNet's 2D spherical Fourier-Bessel basis, per triplet:

    ``out[t, l*N + n] = u_p(x) * c_ln * j_l(z_ln x) * Y_l^0(angle)``, x = dist / cutoff,
    c_ln = sqrt(2) / |j_(l+1)(z_ln)| (so the radial functions are orthonormal on [0, 1] with weight x^2),
    Y_l^0(theta) = sqrt((2l+1) / 4 pi) P_l(cos theta). ``zeros``: [L, N] from
    :func:`spherical_bessel_zeros`. dist and angle: [T]; output [T, L * N].
    """
    num_spherical, num_radial = zeros.shape
    x = dist / cutoff
    env = envelope(x, envelope_exponent)
    cos_t = torch.cos(angle)
    cols = []
    for l in range(num_spherical):
        y = math.sqrt((2 * l + 1) / (4 * math.pi)) * legendre(l, cos_t)
        for n in range(num_radial):
            z = float(zeros[l, n])
            norm = math.sqrt(2.0) / abs(float(spherical_jn(l + 1, torch.tensor(z, dtype=torch.float64))))
            cols.append(env * norm * spherical_jn(l, z * x) * y)
    return torch.stack(cols, dim=-1) if cols else dist.new_zeros(dist.numel(), 0)


def triplet_angles(pos: Tensor, edge_index: Tensor, two_hop_kj: Tensor, two_hop_ji: Tensor,
                   one_hop_j2i: Tensor, one_hop_ji: Tensor, supplement: bool = False
                   ) -> Tuple[Tensor, Tensor]:
    """Angles of the triplets, ``atan2(|u x v|, u . v)`` in [0, pi] (stable near 0 and pi, unlike acos).

    two-hop (k -> j -> i): the bond angle at j, between u = pos_i - pos_j and v = pos_k - pos_j.
    one-hop (j2 -> i, j -> i): the angle at i, between u = pos_j - pos_i and v = pos_j2 - pos_i.
    ``supplement=True`` returns pi - angle, what DimeNet and the authors' PAMNet code compute (they take
    the angle between pos_j - pos_i and pos_k - pos_j).
    """
    src, dst = edge_index[0].long(), edge_index[1].long()

    def angle(center, a, b):
        u, v = pos[a] - pos[center], pos[b] - pos[center]
        return torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(dim=-1))

    two = angle(src[two_hop_ji], dst[two_hop_ji], src[two_hop_kj])
    one = angle(dst[one_hop_ji], src[one_hop_ji], src[one_hop_j2i])
    if supplement:
        two, one = math.pi - two, math.pi - one
    return two, one
