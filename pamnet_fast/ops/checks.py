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
# Under torch.autocast the float ops take half-precision inputs: their autocast rule
# (library.register_autocast_fp32) casts them to float32 before any kernel runs.
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def tensor(op: str, name: str, t, *, dim: Optional[int] = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{op}: {name} must be {dim}-dimensional, got shape {tuple(t.shape)}")
    return t


def floating(op: str, name: str, t, *, dim: Optional[int] = None) -> Tensor:
    tensor(op, name, t, dim=dim)
    if t.dtype not in _FLOAT_DTYPES and not (t.dtype in _AUTOCAST_DTYPES
                                             and torch.is_autocast_enabled(t.device.type)):
        raise TypeError(f"{op}: {name} must be float32 or float64 (bfloat16/float16 only under "
                        f"torch.autocast), got {t.dtype}")
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
    floating(op, "pos", pos, dim=2)
    if pos.size(1) != 3:
        raise ValueError(f"{op}: pos must have shape [N, 3], got {tuple(pos.shape)}")
    finite(op, "pos", pos)
    return pos


def finite(op: str, name: str, t: Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: {name} contains NaN or infinite values")


def batch_vector(op: str, batch: Optional[Tensor], num_nodes: int) -> None:
    if batch is None:
        return
    index(op, "batch", batch)
    if batch.numel() != num_nodes:
        raise ValueError(f"{op}: batch has {batch.numel()} entries but pos has {num_nodes} nodes")
    if num_nodes and int(batch.min()) < 0:
        raise ValueError(f"{op}: batch contains negative graph indices")
    if num_nodes > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{op}: batch must be sorted (nodes of each graph contiguous, graphs in "
                         f"ascending order)")


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
