r"""Streamed PAMNet: memory that grows with atoms, not edges (whole ribosomes on one machine).

The global plex of a large structure has far more edges than atoms (20 Å: ~800 per atom in an rRNA),
and its per-edge terms (the radial basis, its projection :math:`e_{ij}`, the message terms ``r``, ``s``,
each ``[E, F]``) dominate memory. Under a memory budget the encoder instead streams the global plex
in blocks of target atoms: for each block it finds the block's edges (:class:`~.block_neighbors.
BlockNeighbors`, exact), computes their basis and edge terms, sums the messages into the block's
targets with :func:`pamnet_fast.ops.fused_edge_message`, and frees them. The local plex's triplet
terms (``[T, F]``, T ~ 28 per atom at 2.6 Å) are streamed the same way in blocks of receiving edges.
Node tensors (``[N, F]``) and the local edge tensors (``[E_l, F]``, E_l ~ 6 N) stay whole.

The result is the unstreamed model's (same edges, same sums in the same order; the edge terms are
computed per edge instead of once per pair, which changes nothing but rounding). In training each
block is activation-checkpointed: its edges and edge terms are rebuilt in backward, so the memory of
training also grows with atoms.

Use: ``with model.stream("2GiB"): y = model(data)``, or ``model.max_memory = "2GiB"``, or the CLI's
``--max-memory 2GiB``. The budget covers the whole forward above what the process already holds
(estimated); the block sizes follow from it and from a cheap upper bound on each target's neighbors
(the atoms of the cells searched), so a block never exceeds its share.
"""
from __future__ import annotations

import logging
import re
import time
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .. import ops
from .block_neighbors import BlockNeighbors
from .recompute import same_dense_backend
from .graphs import csr_pointer

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 10**3, "KIB": 2**10, "M": 2**20, "MB": 10**6, "MIB": 2**20,
          "G": 2**30, "GB": 10**9, "GIB": 2**30, "T": 2**40, "TB": 10**12, "TIB": 2**40}
# The smallest working set we accept: below it the blocks are so small that Python overhead dominates.
_MIN_WORKING = 16 * 2**20
log = logging.getLogger(__name__)


def parse_memory(value: Union[str, int, float]) -> int:
    """Bytes from ``2GiB``, ``2G`` (binary), ``2GB`` (decimal), ``512MiB``, ``1.5G`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"max_memory: expected a size like '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        out = value
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"max_memory: cannot read {value!r}; use e.g. '2GiB', '512MiB', '8G' or bytes")
        out = float(m.group(1)) * _UNITS[unit]
    if not out > 0:
        raise ValueError(f"max_memory must be positive, got {value!r}")
    return int(out)


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class StreamPlan(NamedTuple):
    """Blocks of the streamed forward: global target ranges and local receiving-edge ranges."""
    global_blocks: List[Tuple[int, int]]
    local_blocks: List[Tuple[int, int]]
    working_bytes: int


def _greedy_blocks(counts: Tensor, cap: int) -> List[Tuple[int, int]]:
    """Contiguous ranges of ``counts`` with sums <= ``cap`` (at least one item each)."""
    n = counts.numel()
    cum = torch.cumsum(counts.double().cpu(), 0)
    blocks, t0 = [], 0
    while t0 < n:
        before = float(cum[t0 - 1]) if t0 else 0.0
        t1 = int(torch.searchsorted(cum, torch.tensor([before + cap], dtype=cum.dtype), right=True))
        t1 = min(max(t1, t0 + 1), n)
        blocks.append((t0, t1))
        t0 = t1
    return blocks


def plan_stream(model, n: int, neighbors: BlockNeighbors, trip: ops.Triplets, num_local_edges: int,
                max_memory: int, dtype: torch.dtype, grad: bool) -> StreamPlan:
    """Block sizes from the budget: the persistent tensors (node and local-edge features, triplet
    indices) are estimated and subtracted; the rest is the working set of one block, whose size in
    edges (global) or triplets (local) follows from the bytes each costs. The global edges per target
    are bounded by the atoms of the cells searched (radius: of smaller index, one edge per pair; kNN:
    at most k)."""
    cfg = model.config
    f, elem, layers = cfg.dim, torch.empty((), dtype=dtype).element_size(), cfg.n_layer
    s = cfg.num_spherical * cfg.num_spherical_radial
    num_trip = int(trip.two_hop_ptr[-1]) + int(trip.one_hop_ptr[-1])
    # Live [N, F] / [E_l, F] tensors: ~12 / ~8 in inference; autograd keeps ~14 / ~10 more per layer
    # with every block recomputed (activation_checkpointing=True), ~36 more [N, F] when the node MLPs'
    # activations are kept (the default "edges"), ~6 more [E_l, F] without any recomputation.
    mode = cfg.activation_checkpointing
    node_f = 12 + (14 if mode is True else 50) * layers if grad else 12
    edge_f = 8 + (10 if mode else 16) * layers if grad else 8
    persistent = (n * f * elem * node_f + num_local_edges * (f * elem * edge_f + 64) + num_trip * 24
                  + n * 64)
    working = max_memory - persistent
    if working < _MIN_WORKING:
        raise ValueError(
            f"max_memory={format_bytes(max_memory)} is too small for this input: its node and local-plex "
            f"tensors alone need about {format_bytes(persistent)} (N={n}, local edges={num_local_edges}, "
            f"dim={f}{', training' if grad else ''}); allow at least {format_bytes(persistent + _MIN_WORKING)}")
    # Per global edge: indices/sort keys, distance, basis, e, r, s (backward: their grads and the
    # recomputed activations); per triplet: the basis, its projection, the layer's two-layer MLP.
    per_edge = ((9 * f + 3 * cfg.num_radial) * elem + 96) if grad else ((3 * f + cfg.num_radial + 2) * elem + 96)
    per_trip = ((9 * f + 2 * s) * elem + 32) if grad else ((3 * f + s + 2) * elem + 32)
    cap = getattr(model, "_stream_block_items", None) or float("inf")
    if neighbors.max_num_neighbors is not None:
        neighbors.counts()  # exact pass: raises on a target over the limit, as radius_graph does
    # An upper bound on the pairs (radius: j < i, one per pair) or edges (kNN) into each target.
    counts = neighbors.candidate_counts(lower=neighbors.k is None)
    global_blocks = _greedy_blocks(counts, max(min(working // per_edge, cap), 1))
    trip_counts = ((trip.two_hop_ptr[1:] - trip.two_hop_ptr[:-1])
                   + (trip.one_hop_ptr[1:] - trip.one_hop_ptr[:-1]))
    local_blocks = _greedy_blocks(trip_counts, max(min(working // per_trip, cap), 1))
    return StreamPlan(global_blocks, local_blocks, working)


def _global_block(model, layer, neighbors: BlockNeighbors, t0: int, t1: int, stats: Optional[dict] = None):
    """Messages of the block's edges. kNN: the edges into targets ``t0 .. t1 - 1`` -> ``[t1 - t0, F]``.
    Radius: the pairs (j < i, i in the block), edge terms once per pair and messages both ways
    (j -> i and i -> j, sharing the pair's row) -> ``[t1, F]``, added to rows ``0 .. t1 - 1``."""
    if neighbors.k is not None:
        def run(p: Tensor, q: Tensor, pos: Tensor) -> Tensor:
            src, ptr, dist = neighbors.edges(t0, t1, pos)
            if stats is not None:
                stats["global_edges"] += src.numel()
            return layer.edge_sum(p, q, model.mlp_rbf_g(model.rbf_g(dist)), src, ptr)
        return run

    def run_pairs(p: Tensor, q: Tensor, pos: Tensor) -> Tensor:
        low, ptr, dist = neighbors.edges(t0, t1, pos, lower=True)
        if stats is not None:
            stats["global_edges"] += 2 * low.numel()
        high = torch.repeat_interleave(torch.arange(t0, t1, device=low.device), ptr[1:] - ptr[:-1],
                                       output_size=low.numel())
        pair = torch.arange(low.numel(), device=low.device)
        src, dst, row = torch.cat([low, high]), torch.cat([high, low]), torch.cat([pair, pair])
        order = torch.argsort(dst * neighbors.n + src)
        src, dst, row = src[order], dst[order], row[order]
        del order, high, pair
        edge_ptr = csr_pointer(dst, t1)
        return layer.edge_sum(p, q, model.mlp_rbf_g(model.rbf_g(dist)), src, edge_ptr, row)
    return run_pairs


def _local_block(model, layer, trip: ops.Triplets, e0: int, e1: int):
    """The triplet sums of the receiving edges ``e0 .. e1 - 1``, their spherical basis built here."""
    def part(other_all: Tensor, ptr_all: Tensor, dist_l: Tensor, angle: Tensor, mlp):
        a, b = int(ptr_all[e0]), int(ptr_all[e1])
        other = other_all[a:b]
        sbf = mlp(model.sbf(dist_l.index_select(0, other), angle[a:b]))
        return sbf, other, ptr_all[e0:e1 + 1] - a

    def run(m_nb: Tensor, dist_l: Tensor, two: Tensor, one: Tensor) -> Tensor:
        if hasattr(model, "mlp_sbf2"):  # PAMNet: two-hop and one-hop
            sbf2, kj, p2 = part(trip.two_hop_kj, trip.two_hop_ptr, dist_l, two, model.mlp_sbf2)
            sbf1, j2i, p1 = part(trip.one_hop_j2i, trip.one_hop_ptr, dist_l, one, model.mlp_sbf1)
            return layer.angle_sum(m_nb, sbf2, kj, p2, sbf1, j2i, p1)
        sbf1, j2i, p1 = part(trip.one_hop_j2i, trip.one_hop_ptr, dist_l, one, model.mlp_sbf)  # PAMNet-s
        return layer.angle_sum(m_nb, sbf1, j2i, p1)
    return run


def _cat(parts: List[Tensor], like: Tensor, rows: int) -> Tensor:
    return torch.cat(parts) if parts else like.new_zeros(rows, like.size(-1))


def _call(fn, recompute: bool, *args: Tensor) -> Tensor:
    """``fn(*args)``; when training, checkpointed so that backward rebuilds the block."""
    if recompute:
        return checkpoint(fn, *args, use_reentrant=False, context_fn=same_dense_backend)
    return fn(*args)


def check_streamable(model) -> None:
    cfg = model.config
    if cfg.reference_compat and cfg.global_graph == "knn":
        raise ValueError("streaming (max_memory) does not support reference_compat=True with "
                         "global_graph='knn' (the authors' kNN list, self counted among the k, from "
                         "which the local plex is also cut, is built whole); use "
                         "reference_compat=False or max_memory=None")
    if not cfg.local_plex:
        raise ValueError("streaming (max_memory) does not support local_plex=False (the global plex "
                         "alone); use max_memory=None")
    if getattr(model, "dipole_head", None) is not None:
        raise ValueError("streaming (max_memory) does not support the dipole head (it needs every "
                         "global edge at once); use max_memory=None")


def _global_sum(model, layer, neighbors: BlockNeighbors, blocks, p: Tensor, q: Tensor, pos: Tensor,
                grad: bool, stats: Optional[dict] = None) -> Tensor:
    """:math:`m_i` ``[N, F]`` of the global layer, block by block."""
    start = time.perf_counter()
    if neighbors.k is not None:
        parts = []
        for i, (t0, t1) in enumerate(blocks):
            parts.append(_call(_global_block(model, layer, neighbors, t0, t1, stats), grad, p[t0:t1], q, pos))
            _log_block(i, blocks, start)
        return _cat(parts, p, 0)
    m = torch.zeros_like(p)
    for i, (t0, t1) in enumerate(blocks):
        part = _call(_global_block(model, layer, neighbors, t0, t1, stats), grad, p[:t1], q, pos)
        if grad:
            m = m + torch.nn.functional.pad(part, (0, 0, 0, m.size(0) - t1))
        else:
            m[:t1] += part
        _log_block(i, blocks, start)
    return m


def _log_block(i: int, blocks, start: float) -> None:
    if log.isEnabledFor(logging.INFO):
        t1 = blocks[i][1]
        log.info("global block %d/%d: %d/%d targets, %.1f s", i + 1, len(blocks), t1, blocks[-1][1],
                 time.perf_counter() - start)


def streamed_encode(model, data, max_memory: int, keep_features: bool = True):
    """:meth:`PAMNet.encode <pamnet_fast.nn.PAMNet.encode>` with the global plex and the triplet terms
    streamed in blocks under ``max_memory`` bytes. Returns a :class:`~.pamnet.PAMNetState` whose
    ``rbf_g`` is ``None`` and whose graphs have no global fields."""
    from .local_mp import propagate
    from .graphs import batch_of, build_graphs
    from .pamnet import PAMNetState

    check_streamable(model)
    cfg = model.config
    pos = data.pos
    x = model.embed(data)
    batch, num_graphs = batch_of(data, x.size(0), x.device)
    g = build_graphs(cfg, pos, getattr(data, "batch", None), getattr(data, "edge_index", None),
                     global_plex=False, num_graphs=num_graphs, merge_angles=False)
    grad = torch.is_grad_enabled() and (pos.requires_grad or any(p.requires_grad for p in model.parameters()))
    k = cfg.knn_k if cfg.global_graph == "knn" else None
    neighbors = BlockNeighbors(pos, cfg.cutoff_g, getattr(data, "batch", None), k=k,
                               max_num_neighbors=cfg.max_num_neighbors)
    plan = plan_stream(model, x.size(0), neighbors, g.trip, g.edge_index_l.size(1), max_memory,
                       x.dtype, grad)
    model.last_stream_plan = plan
    # directed global edges per layer, counted in inference (in training backward rebuilds the blocks)
    stats = None if grad else {"global_edges": 0}

    dist_l = g.dist_l if g.pair_l is None else g.dist_l.index_select(0, g.pair_l)
    rbf_l = model.mlp_rbf_l(model.rbf_l(dist_l))
    two, one = ops.triplet_angles(pos, g.edge_index_l, g.trip, supplement=cfg.reference_compat)
    outs_g, outs_l, atts_g, atts_l, z_g, z_l = [], [], [], [], [], []
    for glob, loc in zip(model.global_layer, model.local_layer):
        h, p, q = glob.node_terms(x)
        m = _global_sum(model, glob, neighbors, plan.global_blocks, p, q, pos, grad,
                        stats if glob is model.global_layer[0] else None)
        x, o, a, z = glob.update_and_output(h + m, x)
        del h, p, q, m
        outs_g.append(o), atts_g.append(a)
        if keep_features:
            z_g.append(z)

        def angle_sum(m_nb, loc=loc):
            return _cat([_call(_local_block(model, loc, g.trip, e0, e1), grad, m_nb, g.dist_l, two, one)
                         for e0, e1 in plan.local_blocks], m_nb, 0)
        x, o, a, z = propagate(loc, x, rbf_l, g.edge_index_l, g.ptr_l, g.edge_ids_l, g.edge_row_l, angle_sum)
        outs_l.append(o), atts_l.append(a)
        if keep_features:
            z_l.append(z)
        del z
    node_out, alpha = model.fusion(outs_g, outs_l, atts_g, atts_l)
    model.last_stream_edges = stats and stats["global_edges"]
    return PAMNetState(node_out, alpha, z_g, z_l, None, rbf_l, g, pos, batch, num_graphs)
