"""Argument checks shared by the Python-side op implementations (reference fallback, Triton).

The C++ ops (csrc/ops.cpp) make the same checks with the same messages. Each raises ``TypeError`` for a
wrong type, dtype or device and ``ValueError`` for a wrong shape or value, naming the op and the tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_INDEX_DTYPES = (torch.int32, torch.int64)
_FLOAT_DTYPES = (torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def tensor(op: str, name: str, t, *, dim: Optional[int] = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{op}: {name} must be {dim}-dimensional, got shape {tuple(t.shape)}")
    return t


def floating(op: str, name: str, t, *, dim: Optional[int] = None, half_ok: bool = False) -> Tensor:
    """A float32/float64 tensor; with ``half_ok`` (the message ops on their Triton kernels) float16 and
    bfloat16 too. A half dtype where it is not supported gets its own message: it is a device rule."""
    tensor(op, name, t, dim=dim)
    if t.dtype in _HALF_DTYPES and (half_ok or torch.is_autocast_enabled(t.device.type)):
        return t  # Triton kernels sum in float32; under autocast the ops' rule casts to float32
    if t.dtype in _HALF_DTYPES:
        raise TypeError(f"{op}: {name} is {t.dtype}: float16/bfloat16 inputs are supported only by the "
                        f"Triton kernels on CUDA (float32 sums) or under torch.autocast; here "
                        f"({t.device.type}) pass float32 or float64")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
    return t


def index(op: str, name: str, t, *, dim: int = 1) -> Tensor:
    tensor(op, name, t, dim=dim)
    if t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{op}: {name} must be an int32 or int64 index tensor, got {t.dtype}")
    return t


def same_device(op: str, **tensors: Optional[Tensor]) -> None:
    named = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise TypeError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")


def same_dtype(op: str, **tensors: Tensor) -> None:
    named = list(tensors.items())
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but {first_name} is {first.dtype}")


def positive(op: str, name: str, value, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{op}: {name} must be {'an int' if integer else 'a number'}, "
                        f"got {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{op}: {name} must be positive and finite, got {value}")


def positions(op: str, pos) -> Tensor:
    """A float ``[N, 3]`` tensor (its values: :func:`position_conditions`)."""
    floating(op, "pos", pos, dim=2)
    if pos.size(1) != 3:
        raise ValueError(f"{op}: pos must have shape [N, 3], got {tuple(pos.shape)}")
    return pos


def finite(op: str, name: str, t: Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: {name} contains NaN or infinite values")


def batch_vector(op: str, batch: Optional[Tensor], num_nodes: int) -> None:
    """An index vector with one entry per node (its values: :func:`position_conditions`)."""
    if batch is None:
        return
    index(op, "batch", batch)
    if batch.numel() != num_nodes:
        raise ValueError(f"{op}: batch has {batch.numel()} entries but pos has {num_nodes} nodes")


def position_conditions(pos: Tensor, batch: Optional[Tensor]) -> list:
    """0-dim boolean device-side conditions on the values of a neighbor search's inputs: finite
    ``pos``, a non-negative, sorted ``batch`` (read them with :func:`all_hold`, or with graph sizes)."""
    conditions = [torch.isfinite(pos).all()]
    if batch is not None and batch.numel():
        conditions += [batch.min() >= 0, sorted_nondecreasing(batch)]
    return conditions


def position_values(op: str, pos: Tensor, batch: Optional[Tensor]) -> None:
    """The error naming which of :func:`position_conditions` fails (reads the device: call it only
    when they do not all hold)."""
    finite(op, "pos", pos)
    if batch is None:
        return
    if batch.numel() and int(batch.min()) < 0:
        raise ValueError(f"{op}: batch contains negative graph indices")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{op}: batch must be sorted (nodes of each graph contiguous, graphs in "
                         f"ascending order)")


def all_hold(*conditions: Tensor) -> bool:
    """Whether every 0-dim boolean device-side condition holds, in ONE device-to-host read (the value
    checks of an op are reduced to this; only a failing input pays for the detailed checks)."""
    if not conditions:
        return True
    return bool(torch.stack([c.reshape(()) for c in conditions]).all())


def not_capturing(op: str, t: Tensor, what: str = "checking the input values") -> None:
    """A clear error instead of CUDA's when an op must read the device inside a CUDA-graph capture."""
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"{op}: {what} reads from the GPU, which CUDA-graph capture does not allow; pass "
            f"check_values=False for inputs known to be valid (pamnet_fast.nn.graphs.build_graphs "
            f"builds such graphs), and build graphs outside the captured region")


def sorted_nondecreasing(t: Tensor) -> Tensor:
    """0-dim boolean: ``t`` (1-D) never decreases."""
    if t.numel() < 2:
        return torch.ones((), dtype=torch.bool, device=t.device)
    return (t[1:] >= t[:-1]).all()


def nonempty_pointer(op: str, name: str, ptr) -> None:
    index(op, name, ptr)
    if ptr.numel() == 0:
        raise ValueError(f"{op}: {name} must have at least one entry (ptr[0] = 0)")


def csr_and_indices(op: str, ptr_name: str, ptr: Tensor, nnz: int, *indices) -> None:
    """:func:`csr_pointer` and :func:`index_range` for each ``(name, idx, upper)`` of ``indices``, with
    one device-to-host read: the conditions are reduced on the device into one flag, and only a bad
    input pays for the detailed checks that name the problem (on a GPU each ``int()``/``bool()`` of a
    device value is a synchronization; five of them cost more than the kernel at 1e5 entries)."""
    nonempty_pointer(op, ptr_name, ptr)
    flags = [ptr[0] != 0, ptr[-1] != nnz]
    if ptr.numel() > 1:
        flags.append((ptr[1:] < ptr[:-1]).any())
    for _name, idx, upper in indices:
        if idx.numel():
            lo, hi = torch.aminmax(idx)
            flags += [lo < 0, hi >= upper]
    if bool(torch.stack(flags).any()):
        csr_pointer(op, ptr_name, ptr, nnz)
        for name, idx, upper in indices:
            index_range(op, name, idx, upper)
        raise AssertionError(f"{op}: the combined check failed but no detailed check did")  # unreachable


def csr_pointer(op: str, name: str, ptr: Tensor, nnz: int) -> None:
    index(op, name, ptr)
    if ptr.numel() == 0:
        raise ValueError(f"{op}: {name} must have at least one entry (ptr[0] = 0)")
    if int(ptr[0]) != 0 or int(ptr[-1]) != nnz:
        raise ValueError(f"{op}: {name} must start at 0 and end at {nnz} (the number of entries), "
                         f"got {int(ptr[0])} and {int(ptr[-1])}")
    if ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError(f"{op}: {name} must be non-decreasing")


def index_range(op: str, name: str, idx: Tensor, upper: int) -> None:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        raise ValueError(f"{op}: {name} has entries outside [0, {upper})")


def rows_match(op: str, name: str, t: Tensor, rows: int, what: str) -> None:
    if t.size(0) != rows:
        raise ValueError(f"{op}: {name} has {t.size(0)} rows but {what} is {rows}")


def features_match(op: str, **tensors: Tensor) -> None:
    named = list(tensors.items())
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.size(1) != first.size(1):
            raise ValueError(f"{op}: {name} has {t.size(1)} features but {first_name} has "
                             f"{first.size(1)}")


def target_sorted_edges(op: str, edge_index: Tensor, num_nodes: int) -> None:
    index(op, "edge_index", edge_index, dim=2)
    if edge_index.size(0) != 2:
        raise ValueError(f"{op}: edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    index_range(op, "edge_index", edge_index, num_nodes)
    dst = edge_index[1]
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        raise ValueError(f"{op}: edge_index must be sorted by target (edge_index[1] non-decreasing); "
                         f"sort it, e.g. with torch_geometric.utils.sort_edge_index(edge_index, "
                         f"sort_by_row=False)")


def triplet_sizes_match(op: str, sizes, two_hop: int, one_hop: int) -> None:
    """The ``sizes`` a caller gave (the list lengths it counted) against the enumerated ones."""
    if sizes is not None and [int(s) for s in sizes] != [two_hop, one_hop]:
        raise ValueError(f"{op}: sizes says {[int(s) for s in sizes]} triplets (two-hop, one-hop), but "
                         f"the edge list has [{two_hop}, {one_hop}]")


def transpose(op: str, name: str, t, entries: int, rows: int) -> None:
    """A transposed CSR (:func:`pamnet_fast.ops.transposed_csr`) of ``entries`` indices into ``rows``
    rows: int64 ``[2 * entries + rows + 1]`` (its values are trusted: it is built, not given)."""
    if t is None:
        return
    tensor(op, name, t, dim=1)
    if t.dtype != torch.int64:
        raise TypeError(f"{op}: {name} must be int64, got {t.dtype}")
    if t.numel() != 2 * entries + rows + 1:
        raise ValueError(f"{op}: {name} must have 2 * {entries} + {rows} + 1 entries "
                         f"(ops.transposed_csr), got shape {tuple(t.shape)}")
