r"""Graph building shared by every model: target-sorted edge lists with CSR pointers, pair rows of
symmetric plexes, edge lengths, and PAMNet's two plexes with their triplets (:func:`build_graphs`).

Everything here is *sync-free* except where an output size is data-dependent: removing self-loops
from a bond list or cutting a kNN list at a radius reads its counts from the device once (one host
read per call, all counts together), and the neighbor-search ops read their own edge totals. No
``.item()``, ``nonzero``, boolean-mask indexing or data-dependent Python branch otherwise, so the model
forward that consumes a :class:`Graphs` runs without a single host synchronization (and can be
captured in a CUDA graph or compiled with ``torch.compile(fullgraph=True)``).

Conventions (PyG): ``edge_index[0]`` is the source j, ``edge_index[1]`` the target i; edge lists are
sorted by target, then source; ``ptr [N + 1]`` is the CSR pointer over targets.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import ops
from ..ops.geometry import pair_distance, rounded_cutoff
from ..ops.transpose import transposed_identity


class AngleLists(NamedTuple):
    """PAMNet's two-hop and one-hop triplets as ONE list per receiving edge (two-hop entries of an
    edge first): both angle sums of a local layer become one gather-multiply-scatter
    (:func:`pamnet_fast.ops.segment_gather_mul`) over one MLP pass, instead of two of each."""
    src: Tensor    # [T2 + T1] sending edge of each entry (k -> j for two-hop, j2 -> i for one-hop)
    ptr: Tensor    # [El + 1] CSR pointer over receiving edges
    order: Tensor  # [T2 + T1] row of cat(two-hop terms, one-hop terms) of each entry


def merged_angle_lists(trip: ops.Triplets) -> AngleLists:
    """:class:`AngleLists` of ``trip`` (sync-free: the sizes are those of the two lists)."""
    ji = torch.cat([trip.two_hop_ji, trip.one_hop_ji])
    order = torch.sort(ji, stable=True).indices
    src = torch.cat([trip.two_hop_kj, trip.one_hop_j2i]).index_select(0, order)
    return AngleLists(src, trip.two_hop_ptr + trip.one_hop_ptr, order)


class PlexTransposes(NamedTuple):
    """Transposed CSRs of a plex's gather indices (:func:`pamnet_fast.ops.transposed_csr`), built
    once per batch for the backward of every layer's message ops (on the GPU each would otherwise
    sort its index in every backward). ``src``: of the edge sources; ``row``: of the edge terms'
    rows (``edge_row``, or every edge its own row); ``angles``: of the sending edges of the angle
    triplets (local plex; PAMNet's merged lists, PAMNet-s's one-hop list)."""
    src: Tensor
    row: Tensor
    angles: Optional[Tensor] = None


class Graphs(NamedTuple):
    """The two plexes of a batch, edges target-sorted with CSR pointers, and the local triplets.

    ``batch``/``num_graphs`` (the graph of each node and the number of graphs) are filled by
    :func:`build_graphs` so that a forward given the graphs needs nothing from the host."""
    edge_index_g: Tensor  # [2, Eg]
    ptr_g: Tensor         # [N + 1]
    dist_g: Tensor        # [Eg]
    edge_index_l: Tensor  # [2, El]
    ptr_l: Tensor         # [N + 1]
    dist_l: Tensor        # [El]
    trip: ops.Triplets
    edge_ids_l: Tensor    # arange(El)
    pair_g: Optional[Tensor] = None      # [R] one global edge per unordered pair (symmetric graphs)
    edge_row_g: Optional[Tensor] = None  # [Eg] the pair (row of the edge terms) of each global edge
    pair_l: Optional[Tensor] = None      # [Rl] same for the local plex (bonds are symmetric)
    edge_row_l: Optional[Tensor] = None  # [El]
    batch: Optional[Tensor] = None       # [N] graph of each node
    num_graphs: Optional[int] = None
    angles: Optional[AngleLists] = None  # both triplet lists merged (PAMNet's local layers)
    transposes_g: Optional[PlexTransposes] = None  # for the backward (build_graphs(transposes=True))
    transposes_l: Optional[PlexTransposes] = None


class InputCheck(NamedTuple):
    """A validity check of the inputs done on the device, read from the host together with the
    graph sizes (no extra synchronization): ``ok`` a 0-dim boolean tensor, ``fail()`` raises the
    error that names the problem (it may read more from the device: only when it fails)."""
    ok: Tensor
    fail: Callable[[], None]


def _raise_failed(checks: Sequence[InputCheck], values: Sequence[int]) -> None:
    for check, ok in zip(checks, values):
        if not ok:
            check.fail()
            raise ValueError("an input check failed")  # fail() raises its own message first


def read_counts(*counts) -> List:
    """The values of integer/boolean tensors (or of :class:`InputCheck` flags), read from the device in
    ONE host synchronization: an int for each 0-dim tensor, a list of ints for each 1-D one."""
    counts = [c.ok if isinstance(c, InputCheck) else c for c in counts]
    flat = torch.cat([c.reshape(-1).long() for c in counts]).tolist()
    out, at = [], 0
    for c in counts:
        n = c.numel()
        out.append(flat[at] if c.dim() == 0 else flat[at:at + n])
        at += n
    return out


def csr_pointer(dst: Tensor, num_nodes: int) -> Tensor:
    """``ptr [num_nodes + 1]`` of a target-sorted ``dst [E]``: ``ptr[i]`` = edges with target < i.
    A binary search instead of ``bincount`` (which sizes its output from the data: a host sync)."""
    nodes = torch.arange(num_nodes + 1, device=dst.device, dtype=dst.dtype)
    return torch.searchsorted(dst, nodes)


def edge_distance(pos: Tensor, edge_index: Tensor) -> Tensor:
    """``[E]`` lengths of ``edge_index`` with the neighbor search's exact formula
    (:func:`pamnet_fast.ops.geometry.pair_distance`), differentiable w.r.t. ``pos``."""
    ends = pos.index_select(0, edge_index.reshape(-1)).view(2, -1, pos.size(-1))  # one gather
    return pair_distance(ends[1], ends[0])


def _compact_sorted(edge_index: Tensor, keep: Tensor, key: Tensor, count: int) -> Tensor:
    """The ``count`` kept edges ordered by ``key`` (dropped edges are sorted last, then cut): a
    boolean selection whose size was read beforehand, so it does not sync again."""
    key = torch.where(keep, key, torch.iinfo(key.dtype).max)
    order = torch.sort(key, stable=True).indices[:count]
    return edge_index.index_select(1, order)


def sort_edges(edge_index: Tensor, num_nodes: int, remove_self_loops: bool = True
               ) -> Tuple[Tensor, Tensor]:
    """Sort ``edge_index [2, E]`` by target then source (self-loops dropped); returns it and ``ptr``.
    One host read (the number of edges kept) when ``remove_self_loops``; none otherwise."""
    edge_index = edge_index.long()
    src, dst = edge_index[0], edge_index[1]
    key = dst * num_nodes + src
    if not remove_self_loops:
        edge_index = edge_index.index_select(1, torch.sort(key, stable=True).indices)
    else:
        keep = src != dst
        edge_index = _compact_sorted(edge_index, keep, key, read_counts(keep.sum())[0])
    return edge_index, csr_pointer(edge_index[1], num_nodes)


def _pairs_of_symmetric(edge_index: Tensor, num_nodes: int, num_pairs: int,
                        rev: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """:func:`pair_rows` of an edge list known to be symmetric, with ``num_pairs`` edges j -> i,
    j < i: sync-free (the pair list is filled by a scatter instead of ``nonzero``). ``rev``: the
    position of each edge's reverse, when the caller has it."""
    src, dst = edge_index[0], edge_index[1]
    E = src.numel()
    if rev is None:
        key, rev_key = dst * num_nodes + src, src * num_nodes + dst
        rev = torch.searchsorted(key, rev_key).clamp_(max=max(E - 1, 0))
    lower = src < dst
    row = torch.cumsum(lower, 0) - 1
    edge_row = torch.where(lower, row, row.index_select(0, rev))
    return _positions(lower, row, num_pairs), edge_row


def _positions(mask: Tensor, rank: Tensor, count: int) -> Tensor:
    """``nonzero(mask)`` without a host read, given ``count = mask.sum()`` (read with other counts)
    and ``rank = cumsum(mask) - 1``: each True entry's position is scattered to its rank, the others
    into a spare last slot, which is cut."""
    slot = torch.where(mask, rank, count)
    out = torch.zeros(count + 1, dtype=torch.long, device=mask.device)
    return out.scatter_(0, slot, torch.arange(mask.numel(), device=mask.device))[:count]


def _reverse_positions(src: Tensor, dst: Tensor, key: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """``(rev [E], found [E])``: where the reverse of each edge ``src -> dst`` is in the sorted
    ``key`` (the first such edge) and whether it is there."""
    rev_key = src * num_nodes + dst
    rev = torch.searchsorted(key, rev_key).clamp_(max=max(src.numel() - 1, 0))
    return rev, key.index_select(0, rev) == rev_key


def _symmetry_counts(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """Device-side ``(every edge has its reverse and none is a self-loop, number of edges j -> i
    with j < i)`` of a target-sorted edge list, for one host read together with other counts."""
    src, dst = edge_index[0], edge_index[1]
    if src.numel() == 0:
        zero = torch.zeros((), dtype=torch.long, device=src.device)
        return zero, zero
    _, found = _reverse_positions(src, dst, dst * num_nodes + src, num_nodes)
    return (found & (src != dst)).all(), (src < dst).sum()


def pair_rows(edge_index: Tensor, num_nodes: int, *, symmetric: bool = False
              ) -> Optional[Tuple[Tensor, Tensor]]:
    """For a symmetric edge list without self-loops, sorted by target then source: ``(pair [R],
    edge_row [E])`` with ``pair`` the edges ``j -> i`` with ``j < i`` (one per unordered pair) and
    ``edge_row[e]`` the position in ``pair`` of ``e`` or of its reverse. Both directions have
    bit-identical distances (the difference vectors are exact negatives), so their edge terms can be
    computed once per pair.

    ``symmetric=True``: the caller knows the list is symmetric without duplicates (a radius graph):
    no host synchronization. Otherwise the list is checked (one host read) and ``None`` is returned
    when some edge has no reverse (e.g. a kNN graph) or is a self-loop.
    """
    E = edge_index.size(1)
    if E == 0:
        return None
    if symmetric:
        return _pairs_of_symmetric(edge_index, num_nodes, E // 2)
    ok, num_pairs = read_counts(*_symmetry_counts(edge_index, num_nodes))
    return _pairs_of_symmetric(edge_index, num_nodes, num_pairs) if ok else None


def position_check(pos: Tensor, batch: Optional[Tensor]) -> InputCheck:
    """Finite ``pos`` and a sorted, non-negative ``batch`` as an :class:`InputCheck` (what the
    neighbor searches would otherwise check, one read each, before they run unchecked)."""
    conditions = ops.checks.position_conditions(pos, batch)
    return InputCheck(torch.stack(conditions).all(),
                      lambda: ops.checks.position_values("build_graphs", pos, batch))


def bond_check(bonds: Tensor, num_nodes: int, op: str = "build_graphs") -> InputCheck:
    """A ``[2, E]`` bond list with every index in ``[0, num_nodes)``, as an :class:`InputCheck`
    (``op`` names the caller in the error)."""
    if bonds.dim() != 2 or bonds.size(0) != 2:
        raise ValueError(f"{op}: the bond list (data.edge_index) must have shape [2, E], got "
                         f"{tuple(bonds.shape)}")
    ok = ((bonds >= 0) & (bonds < num_nodes)).all() if bonds.numel() else torch.ones(
        (), dtype=torch.bool, device=bonds.device)

    def fail():
        raise ValueError(f"{op}: the bond list (data.edge_index) has atom indices outside "
                         f"[0, {num_nodes})")
    return InputCheck(ok, fail)


class BondPlex(NamedTuple):
    """A bond list as a plex (:func:`bond_graph`)."""
    edge_index: Tensor                        # [2, E] sorted by target then source, no self-loops
    ptr: Tensor                               # [N + 1]
    pairs: Optional[Tuple[Tensor, Tensor]]    # pair_rows, when every bond is listed both ways
    triplets: Optional[ops.Triplets] = None   # when asked for (their sizes came with the read)


def bond_graph(bonds: Tensor, num_nodes: int, checks: Sequence[InputCheck] = (),
               triplets: Optional[bool] = None) -> BondPlex:
    """A bond list (any order, both directions, maybe with self-loops) as a plex: self-loops
    dropped, sorted by target then source, with :func:`pair_rows` when every bond is listed both ways.
    One host read for all of it (``checks``: :class:`InputCheck` flags read in the same read, with the
    check that the indices are in range). ``triplets`` (``include_self_pairs`` of
    :func:`pamnet_fast.ops.triplets`, or ``None`` for none): also the angle triplets, whose sizes
    ride on the same read (:func:`pamnet_fast.ops.triplet_sizes`), so enumerating them reads nothing."""
    checks = (bond_check(bonds, num_nodes),) + tuple(checks)
    bonds = bonds.long()
    # sorted by (target, source), self-loops last (key max): the kept edges are a prefix of the list
    loop = bonds[0] == bonds[1]
    key = torch.where(loop, torch.iinfo(torch.long).max, bonds[1] * num_nodes + bonds[0])
    key, order = torch.sort(key, stable=True)
    edge_index = bonds.index_select(1, order)
    kept = ~loop.index_select(0, order)
    ptr = torch.searchsorted(key, torch.arange(num_nodes + 1, device=key.device) * num_nodes)
    rev, found = _reverse_positions(edge_index[0], edge_index[1], key, num_nodes)
    symmetric = (found | ~kept).all()
    num_pairs = (edge_index[0] < edge_index[1]).sum()
    sizes = [] if triplets is None else list(ops.triplet_sizes(
        edge_index, num_nodes, include_self_pairs=triplets, keep=kept).unbind())
    count, symmetric, num_pairs, *rest = read_counts(ptr[-1], symmetric, num_pairs, *sizes, *checks)
    sizes, ok = rest[:len(sizes)], rest[len(sizes):]
    _raise_failed(checks, ok)
    edge_index = edge_index[:, :count]
    pairs = (_pairs_of_symmetric(edge_index, num_nodes, num_pairs, rev[:count])
             if symmetric and count else None)
    trip = None if triplets is None else ops.triplets(
        edge_index, num_nodes, include_self_pairs=triplets, check_values=False, sizes=sizes)
    return BondPlex(edge_index, ptr, pairs, trip)


def _search_safe_unchecked(pos: Tensor) -> bool:
    """Whether the neighbor search on ``pos``'s device may run before the input checks are read: the
    Triton kernels (CUDA) are safe on any input; the C++ ones assume valid input."""
    return pos.is_cuda


def radius_subgraph(edge_index: Tensor, ptr: Tensor, dist: Tensor, r: float,
                    include_self_pairs: bool = False, checks: Sequence[InputCheck] = ()
                    ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    r"""The edges of a radius graph within a smaller cutoff ``r``, without a second neighbor search.

    ``edge_index [2, E]``, ``ptr [N + 1]``, ``dist [E]``: a radius graph (symmetric, no self-loops,
    sorted by target then source) and its :func:`edge_distance`. An edge is kept iff ``dist <= r``
    with ``r`` rounded to the dtype of ``dist``: the neighbor search's own rule on the same exact
    distances, so the result equals ``radius_graph(pos, r)`` edge for edge, in the same order.

    Returns ``(edge_index [2, E'], ptr [N + 1], order [E'], sizes)``: ``order`` the kept positions
    (``dist[order]`` are the kept lengths) and ``sizes`` the lengths of its :func:`pamnet_fast.ops.triplets`
    lists ``[two-hop, one-hop]``, read with ``E'`` in one host read. For a symmetric list without
    duplicates both are :math:`\sum_v d_v^2 - E'` (the one-hop list :math:`\sum_v d_v^2` with
    ``include_self_pairs``), :math:`d_v` the degree of node ``v``. ``checks``: :class:`InputCheck`
    flags read in the same read (raised when one fails).
    """
    keep = dist <= rounded_cutoff(r, dist.dtype)
    kept_before = torch.cumsum(keep, 0)
    start = torch.cat([kept_before.new_zeros(1), kept_before])
    ptr = start.index_select(0, ptr)
    deg = ptr[1:] - ptr[:-1]
    squares = (deg * deg).sum()
    count, two_hop, squares, *ok = read_counts(ptr[-1], squares - ptr[-1], squares, *checks)
    _raise_failed(checks, ok)
    one_hop = squares if include_self_pairs else two_hop
    order = _positions(keep, kept_before - 1, count)
    return edge_index.index_select(1, order), ptr, order, [two_hop, one_hop]


def reverse_edges(src: Tensor, dst: Tensor, num_nodes: int, by_key=None) -> Tuple[Tensor, Tensor]:
    """``(rev [E], all_found)``: the position of edge ``dst -> src`` for each edge ``src -> dst`` (any
    order), and a 0-dim boolean, on the device, telling whether every edge has its reverse (for the
    caller to read with its other counts: no host read here). ``by_key``: the caller's
    ``torch.sort(dst * num_nodes + src, stable=True)``, when it has it."""
    key, order = by_key if by_key is not None else torch.sort(dst * num_nodes + src, stable=True)
    pos, found = _reverse_positions(src, dst, key, num_nodes)
    rev = order.index_select(0, pos) if key.numel() else pos
    return rev, found.all()


def batch_of(data, num_nodes: int, device) -> Tuple[Tensor, int]:
    """``(batch [N], num_graphs)`` of a PyG ``Data``/``Batch`` (one graph without ``batch``). Reads
    ``batch.max()`` from the device only when ``data.num_graphs`` is not a Python int."""
    batch = getattr(data, "batch", None)
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device), 1
    num_graphs = getattr(data, "num_graphs", None)
    if not isinstance(num_graphs, int):
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return batch.long(), num_graphs


def _knn_compat(cfg, pos: Tensor, batch: Optional[Tensor], num_nodes: int,
                checks: Sequence[InputCheck] = ()):
    """The authors' RNA plexes from one ``knn(pos, pos, k)`` list (each atom among its own k, then
    dropped): global = the list cut at ``cutoff_g`` (already target-sorted), local = the list cut at
    ``cutoff_l`` and transposed, re-sorted. One host read for both sizes."""
    knn = ops.knn_graph(pos, cfg.knn_k, batch, loop=True)
    src, dst = knn[0], knn[1]
    d = edge_distance(pos, knn)
    not_loop = src != dst
    keep_g, keep_l = not_loop & (d <= cfg.cutoff_g), not_loop & (d <= cfg.cutoff_l)
    count_g, count_l, *ok = read_counts(keep_g.sum(), keep_l.sum(), *checks)
    _raise_failed(checks, ok)
    position = torch.arange(knn.size(1), device=pos.device)
    ei_g = _compact_sorted(knn, keep_g, position, count_g)
    ei_l = _compact_sorted(knn.flip(0), keep_l, src * num_nodes + dst, count_l)
    return ei_g, csr_pointer(ei_g[1], num_nodes), ei_l, csr_pointer(ei_l[1], num_nodes)


def build_graphs(cfg, pos: Tensor, batch: Optional[Tensor], bonds: Optional[Tensor] = None,
                 global_plex: bool = True, num_graphs: Optional[int] = None,
                 checks: Sequence[InputCheck] = (), merge_angles: bool = True,
                 local_plex: bool = True, transposes: bool = False,
                 local_from_global: Optional[bool] = None) -> Graphs:
    """Both plexes of a :class:`~.pamnet.PAMNetConfig` and the local triplets, per graph of ``batch``
    (graphs never interact).

    Default: global = ``radius_graph(cutoff_g)`` or ``knn_graph(knn_k, r=cutoff_g)`` (messages into i
    from its k nearest); local = bonds or ``radius_graph(cutoff_l)``; triplets without self pairs.
    Radius plexes are symmetric by construction, so their pair rows need no check; a bond list is
    checked (one host read, with its self-loop count). ``reference_compat`` with a kNN global plex
    (the authors' RNA model): one list, their ``knn(pos, pos, k)`` with each atom counted among its
    own k and then dropped; the global plex is that list cut at ``cutoff_g`` with each query receiving
    from its neighbours (their global layer runs with ``flow='target_to_source'``), the local plex the
    same list cut at ``cutoff_l`` and transposed (their local layer reads it as ``j, i = query,
    neighbour``); one-hop triplets include each edge paired with itself. ``global_plex=False``: the
    global fields are ``None`` (the streamed path, :mod:`pamnet_fast.nn.stream`, builds it per block;
    not with ``reference_compat`` + kNN). ``num_graphs``: stored with ``batch`` in the result
    (``batch.max() + 1`` is read from the device when not given). ``checks``: input checks
    (:class:`InputCheck`) read in the same host read as the graph sizes (or alone, when no size
    needs reading: radius plexes). ``merge_angles``: also the :class:`AngleLists` (PAMNet; PAMNet-s
    uses the one-hop list only). ``local_plex=False``: the local fields are ``None`` (the global
    plex alone). ``transposes``: also the :class:`PlexTransposes` of both plexes (for a backward on
    the GPU kernels; sync-free). ``local_from_global``: a radius local plex with ``cutoff_l <=
    cutoff_g`` is cut from the radius global plex (:func:`radius_subgraph`: the same edges, its size
    and its triplet sizes in one read, no second neighbor search) instead of searched; default on a
    GPU (on the CPU the C++ search of the small cutoff costs less than a pass over the global edges).

    Host reads: the input checks (with finite ``pos``, sorted ``batch`` and bonds in range) in one,
    riding on a bond list's sizes and, for a bond plex, its triplet sizes; then one per neighbor
    search, and one for the triplets of a radius or kNN local plex (with a local plex cut from the
    global one, its size and triplet sizes in one read, which on the GPU also carries the input
    checks). So a bond plex with a radius global plex (QM9) reads twice, and so do two radius plexes
    on the GPU (three times when the local plex is searched). The searches and the triplet
    enumeration run after the checks with ``check_values=False``.
    """
    n = pos.size(0)
    compat = cfg.reference_compat
    mnn = cfg.max_num_neighbors
    compat_knn = compat and cfg.global_graph == "knn"
    if cfg.global_graph not in ("radius", "knn"):
        raise ValueError(f"global_graph must be 'radius' or 'knn', got {cfg.global_graph!r}")
    if cfg.local_graph not in ("bonds", "radius"):
        raise ValueError(f"local_graph must be 'bonds' or 'radius', got {cfg.local_graph!r}")
    bonds_local = local_plex and cfg.local_graph == "bonds"
    if local_from_global is None:  # on the CPU the search is cheaper than a pass over Eg
        local_from_global = pos.device.type != "cpu"
    local_from_global = (local_from_global and local_plex and global_plex and not compat_knn
                         and cfg.local_graph == "radius" and cfg.global_graph == "radius"
                         and cfg.cutoff_l <= cfg.cutoff_g)
    if bonds_local and bonds is None:
        raise ValueError("local_graph='bonds' needs data.edge_index (the chemical bonds)")
    # The input checks ride on the first read that sizes an edge list (a bond list's, the authors'
    # kNN list's, or on the GPU a local plex cut from the global one), or are read alone: before any
    # neighbor search that runs unchecked and is not safe on invalid input.
    checks = tuple(checks) + (position_check(pos, batch),)
    trip, deferred = None, ()
    if bonds_local:
        ei_l, ptr_l, pairs_l, trip = bond_graph(bonds, n, checks, triplets=compat)
    elif compat_knn:
        ei_g, ptr_g, ei_l_knn, ptr_l_knn = _knn_compat(cfg, pos, batch, n, checks)
    elif local_from_global and _search_safe_unchecked(pos):
        # The GPU search is safe on any input (NaN positions, an unsorted batch: no access out of
        # bounds), so the checks ride on the local plex's read instead of a read of their own.
        deferred = checks
    else:
        _raise_failed(checks, read_counts(*checks))
    if compat_knn and bonds_local:
        ei_g, ptr_g, ei_l_knn, ptr_l_knn = _knn_compat(cfg, pos, batch, n)
    if not global_plex:
        ei_g = ptr_g = None
    elif compat_knn:
        pass
    elif cfg.global_graph == "knn":
        ei_g, ptr_g = ops.knn_graph(pos, cfg.knn_k, batch, r=cfg.cutoff_g, return_ptr=True)
    else:
        try:
            ei_g, ptr_g = ops.radius_graph(pos, cfg.cutoff_g, batch, max_num_neighbors=mnn,
                                           return_ptr=True, check_values=False)
        except ValueError:  # (max_num_neighbors) on input that fails a check: report the check
            if deferred:
                _raise_failed(deferred, read_counts(*deferred))
            raise
    dist_g = edge_distance(pos, ei_g) if global_plex else None
    # radius plexes are symmetric by construction (max_num_neighbors raises, never truncates)
    pairs_g = (pair_rows(ei_g, n, symmetric=True)
               if global_plex and cfg.global_graph == "radius" else None)

    dist_l = edge_ids = angles = pair_l = edge_row_l = None
    if not local_plex:
        ei_l = ptr_l = None
    else:
        if bonds_local:
            pass  # built above (its read carried the input checks)
        elif compat_knn:
            ei_l, ptr_l, pairs_l = ei_l_knn, ptr_l_knn, None  # a transposed kNN list: not symmetric
        elif local_from_global:
            ei_l, ptr_l, kept, sizes = radius_subgraph(ei_g, ptr_g, dist_g, cfg.cutoff_l, compat,
                                                       checks=deferred)
            dist_l = dist_g.index_select(0, kept)
            trip = ops.triplets(ei_l, n, include_self_pairs=compat, check_values=False, sizes=sizes)
        else:
            ei_l, ptr_l = ops.radius_graph(pos, cfg.cutoff_l, batch, max_num_neighbors=mnn,
                                           return_ptr=True, check_values=False)
        if not bonds_local and not compat_knn:  # radius plexes are symmetric by construction
            pairs_l = pair_rows(ei_l, n, symmetric=True)
        if dist_l is None:
            dist_l = edge_distance(pos, ei_l)
        if trip is None:
            trip = ops.triplets(ei_l, n, include_self_pairs=compat, check_values=False)
        edge_ids = torch.arange(ei_l.size(1), device=pos.device)
        pair_l, edge_row_l = pairs_l or (None, None)
        angles = merged_angle_lists(trip) if merge_angles else None
    if batch is None:
        batch, num_graphs = torch.zeros(n, dtype=torch.long, device=pos.device), 1
    elif num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    pair_g, edge_row_g = pairs_g or (None, None)
    t_g = t_l = None
    if transposes and global_plex:
        t_g = _plex_transposes(ei_g, ptr_g, n, pairs_g)
    if transposes and local_plex:
        sending, angle_ptr = ((angles.src, angles.ptr) if angles is not None else
                              (trip.one_hop_j2i, trip.one_hop_ptr))
        t_l = _plex_transposes(ei_l, ptr_l, n, pairs_l,
                               ops.transposed_csr(sending, ei_l.size(1), angle_ptr))
    return Graphs(ei_g, ptr_g, dist_g, ei_l, ptr_l, dist_l, trip, edge_ids, pair_g, edge_row_g,
                  pair_l, edge_row_l, batch.long(), num_graphs, angles, t_g, t_l)


def _plex_transposes(edge_index: Tensor, ptr: Tensor, num_nodes: int,
                     pairs: Optional[Tuple[Tensor, Tensor]], angles: Optional[Tensor] = None
                     ) -> PlexTransposes:
    """The :class:`PlexTransposes` of a plex with its :func:`pair_rows` (or ``None``: every edge its
    own row)."""
    src = ops.transposed_csr(edge_index[0], num_nodes, ptr)
    if pairs is None:  # every edge its own row; the segment of an edge is its target
        return PlexTransposes(src, transposed_identity(edge_index[1]), angles)
    return PlexTransposes(src, ops.transposed_csr(pairs[1], pairs[0].numel(), ptr), angles)
