"""Count host synchronizations and dispatched aten ops of a piece of PyTorch code, on any device.

On a GPU a host synchronization (the CPU waiting for the device) happens whenever Python needs a
value computed on the device (``.item()``, ``.tolist()``, ``bool(t)``, ``int(t)``) or an op sizes its
output from the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``,
``repeat_interleave`` without ``output_size``, ...). Both can be seen on the CPU too, where they cost
nothing, so the tests check the GPU's synchronization budget of a model without a GPU:

    with HostSyncCounter() as counter:
        model(data, graphs)
    assert counter.syncs == []

``ops`` counts every aten op that reaches the dispatcher (a proxy for kernel launches) and
``kernel_ops`` those that are not views (views launch nothing).
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that make the host wait for the device (on CUDA)
SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique_consecutive", "_unique2",
                      "unique_dim", "bincount", "is_nonzero", "equal", "item"})
# Python-level reads of tensor values (on the CPU they never reach the dispatcher)
_READS = {torch.Tensor.item: "item", torch.Tensor.tolist: "tolist", torch.Tensor.__bool__: "bool",
          torch.Tensor.__int__: "int", torch.Tensor.__float__: "float", torch.Tensor.__index__: "index"}
# (.numpy() is not among them: it only exists for CPU tensors, where nothing waits)
_VIEWS = frozenset({"view", "_unsafe_view", "slice", "select", "alias", "expand", "t", "transpose",
                    "permute", "unsqueeze", "squeeze", "as_strided", "_reshape_alias", "detach", "unbind",
                    "split", "split_with_sizes", "chunk", "narrow", "view_as_real", "unfold", "diagonal"})


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        c = self.counter
        c.op_names.append(name)
        if c._reading:  # the aten side of a Python-level read, already recorded
            pass
        elif name in SYNC_OPS:
            c._sync(name, args)
        elif name in ("index", "index_put", "index_put_") and any(
                t is not None and t.dtype == torch.bool for t in args[1]):
            c._sync(f"{name}[bool]", args)
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) < 3:
            c._sync("repeat_interleave", args)
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _READS.get(func)
        if name is None or not args or not isinstance(args[0], torch.Tensor) or self.counter._reading:
            return func(*args, **(kwargs or {}))
        self.counter._sync(name, args)
        self.counter._reading = True
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.counter._reading = False


class HostSyncCounter:
    """Context manager recording ``syncs`` (names of the synchronizing calls, in order),
    ``sync_tensors`` (the tensor each of them reads, or ``None``) and ``op_names`` (the aten ops
    dispatched, in order). ``python_reads=False`` leaves out the Python-level reads (``.item()``,
    ``.tolist()``, ``bool(t)``, ...), for code whose own reads are counted otherwise."""

    def __init__(self, python_reads: bool = True):
        self.syncs: List[str] = []
        self.sync_tensors: List[Optional[torch.Tensor]] = []
        self.op_names: List[str] = []
        self._reading = False
        self.mode = _Dispatch(self)
        self._function = _Function(self) if python_reads else None

    def _sync(self, name: str, args) -> None:
        self.syncs.append(name)
        self.sync_tensors.append(args[0] if args and isinstance(args[0], torch.Tensor) else None)

    @property
    def op_counts(self) -> Counter:
        """Aten op name -> calls."""
        return Counter(self.op_names)

    @property
    def ops(self) -> int:
        """Aten ops dispatched."""
        return len(self.op_names)

    @property
    def kernel_ops(self) -> int:
        """Aten ops dispatched that are not views."""
        return sum(n for name, n in self.op_counts.items() if name not in _VIEWS)

    def __enter__(self) -> "HostSyncCounter":
        if self._function is not None:
            self._function.__enter__()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        if self._function is not None:
            self._function.__exit__(*exc)
        return False
