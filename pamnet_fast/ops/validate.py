"""Per-op argument validation for the Python-side implementations (reference fallback and Triton).

Mirrors csrc/ops.cpp: same checks, same messages. Called with the op's schema arguments. The checks
of values (``values=True``, the ops' ``check_values``) are reduced on the device and read from it
ONCE per call; ``check_values=False`` (inputs valid by construction) reads nothing.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import checks


def _position_values(op: str, pos: Tensor, batch: Optional[Tensor]) -> None:
    """Finite ``pos``, sorted non-negative ``batch``: one device read; detailed checks on failure."""
    if not checks.all_hold(*checks.position_conditions(pos, batch)):
        checks.position_values(op, pos, batch)
        raise AssertionError(f"{op}: the combined check failed but no detailed check did")


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor], max_num_neighbors: int, *,
                 values: bool = True) -> None:
    """``values=False`` leaves out the checks of values (finite ``pos``, sorted ``batch``)."""
    op = "radius_graph"
    checks.positions(op, pos)
    checks.positive(op, "r", r)
    checks.batch_vector(op, batch, pos.size(0))
    checks.same_device(op, pos=pos, batch=batch)
    if values:
        checks.not_capturing(op, pos)
        _position_values(op, pos, batch)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor], r: Optional[float]) -> None:
    op = "knn_graph"
    checks.positions(op, pos)
    checks.positive(op, "k", k, integer=True)
    if r is not None:
        checks.positive(op, "r", r)
    checks.batch_vector(op, batch, pos.size(0))
    checks.same_device(op, pos=pos, batch=batch)
    checks.not_capturing(op, pos)
    _position_values(op, pos, batch)


def triplets(edge_index: Tensor, num_nodes: int, *, values: bool = True, sizes=None) -> None:
    """``values=False`` leaves out the checks of values (indices in range, sorted by target);
    ``sizes``, when given, must be two non-negative ints (whether they are right is checked by the
    kernels, which count the triplets anyway)."""
    op = "triplets"
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"{op}: num_nodes must be a non-negative int, got {num_nodes!r}")
    checks.index(op, "edge_index", edge_index, dim=2)
    if edge_index.size(0) != 2:
        raise ValueError(f"{op}: edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if sizes is not None and (len(sizes) != 2 or any(int(s) < 0 for s in sizes)):
        raise ValueError(f"{op}: sizes must be two non-negative ints (two-hop, one-hop), got "
                         f"{list(sizes)}")
    if values and edge_index.numel():
        checks.not_capturing(op, edge_index)
        lo, hi = torch.aminmax(edge_index)
        if not checks.all_hold(lo >= 0, hi < num_nodes, checks.sorted_nondecreasing(edge_index[1])):
            checks.target_sorted_edges(op, edge_index, num_nodes)


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor, *, half_ok: bool = False,
                       values: bool = True, src_transpose: Optional[Tensor] = None) -> None:
    """``values=False`` leaves out the checks of index values (the Triton kernels make them in one
    kernel launch: ``triton._common.check_csr``)."""
    op = "segment_gather_mul"
    checks.floating(op, "a", a, dim=2, half_ok=half_ok)
    checks.floating(op, "b", b, dim=2, half_ok=half_ok)
    checks.same_dtype(op, a=a, b=b)
    checks.index(op, "src", src)
    checks.nonempty_pointer(op, "ptr", ptr)
    checks.same_device(op, a=a, src=src, b=b, ptr=ptr)
    checks.features_match(op, a=a, b=b)
    checks.rows_match(op, "src", src, b.size(0), "the number of rows of b")
    checks.transpose(op, "src_transpose", src_transpose, src.numel(), a.size(0))
    if values:
        checks.not_capturing(op, ptr)
        checks.csr_and_indices(op, "ptr", ptr, b.size(0), ("src", src, a.size(0)))


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                       edge_row: Optional[Tensor] = None, *, half_ok: bool = False,
                       values: bool = True, src_transpose: Optional[Tensor] = None,
                       row_transpose: Optional[Tensor] = None, op: str = "fused_edge_message") -> None:
    """``values=False``: as :func:`segment_gather_mul`. ``op``: ``edge_message`` has the same inputs."""
    for name, t in (("p", p), ("q", q), ("r", r), ("s", s)):
        checks.floating(op, name, t, dim=2, half_ok=half_ok)
    checks.same_dtype(op, p=p, q=q, r=r, s=s)
    checks.index(op, "src", src)
    checks.nonempty_pointer(op, "ptr", ptr)
    checks.same_device(op, p=p, q=q, r=r, s=s, ptr=ptr, src=src)
    checks.features_match(op, p=p, q=q, r=r, s=s)
    checks.rows_match(op, "s", s, r.size(0), "the number of rows of r")
    E, edges = r.size(0), "the number of rows of r (edges)"
    ranges = [("src", src, q.size(0))]
    if edge_row is not None:
        checks.index(op, "edge_row", edge_row)
        checks.same_device(op, edge_row=edge_row, src=src)
        ranges.append(("edge_row", edge_row, r.size(0)))
        E, edges = edge_row.numel(), "the number of edges (len(edge_row))"
    checks.rows_match(op, "src", src, E, edges)
    checks.rows_match(op, "p", p, ptr.numel() - 1, "the number of targets (len(ptr) - 1)")
    checks.transpose(op, "src_transpose", src_transpose, src.numel(), q.size(0))
    if row_transpose is not None and edge_row is None:
        raise ValueError(f"{op}: row_transpose given without edge_row")
    checks.transpose(op, "row_transpose", row_transpose, src.numel(), r.size(0))
    if values:
        checks.not_capturing(op, ptr)
        checks.csr_and_indices(op, "ptr", ptr, E, *ranges)


def _distance_values(op: str, dist: Tensor, angle: Optional[Tensor] = None) -> None:
    """Finite non-negative ``dist`` (and finite ``angle``): one device read; detailed on failure."""
    checks.not_capturing(op, dist)
    conditions = [torch.isfinite(dist).all(), dist.min() >= 0] if dist.numel() else []
    if angle is not None and angle.numel():
        conditions.append(torch.isfinite(angle).all())
    if not checks.all_hold(*conditions):
        checks.finite(op, "dist", dist)
        if angle is not None:
            checks.finite(op, "angle", angle)
        raise ValueError(f"{op}: dist contains negative distances")


def bessel_basis(dist: Tensor, freq: Tensor, cutoff: float, envelope_exponent: int, *,
                 values: bool = True) -> None:
    """``values=False`` leaves out the checks of values (finite, non-negative distances)."""
    op = "bessel_basis"
    checks.floating(op, "dist", dist, dim=1)
    checks.floating(op, "freq", freq, dim=1)
    checks.same_dtype(op, dist=dist, freq=freq)
    checks.same_device(op, dist=dist, freq=freq)
    checks.positive(op, "cutoff", cutoff)
    checks.positive(op, "envelope_exponent", envelope_exponent, integer=True)
    if values:
        _distance_values(op, dist)


def spherical_basis(dist: Tensor, angle: Tensor, zeros: Tensor, cutoff: float,
                    envelope_exponent: int, *, values: bool = True) -> None:
    """``values=False``: as :func:`bessel_basis` (and finite angles)."""
    op = "spherical_basis"
    checks.floating(op, "dist", dist, dim=1)
    checks.floating(op, "angle", angle, dim=1)
    checks.floating(op, "zeros", zeros, dim=2)
    checks.same_dtype(op, dist=dist, angle=angle)
    checks.same_device(op, dist=dist, angle=angle)
    checks.rows_match(op, "angle", angle, dist.size(0), "the length of dist")
    checks.positive(op, "cutoff", cutoff)
    checks.positive(op, "envelope_exponent", envelope_exponent, integer=True)
    if values:
        _distance_values(op, dist, angle)
