r"""Activation checkpointing of the PAMNet layers' MLP blocks: recompute in backward, keep only inputs.

:func:`maybe_checkpoint` runs ``fn(*args)`` without recording and, in backward, recomputes it with
recording and differentiates it once (:class:`Recompute`). The module's parameters are explicit inputs
of that one autograd node, so their gradients flow whether or not ``args`` require grad, and
``torch.autograd.grad`` (e.g. forces w.r.t. positions) works through it. It replaces
``torch.utils.checkpoint(use_reentrant=False)``, whose saved-tensor hooks cost more host time than the
node MLPs' kernels take to launch (QM9, 2 molecules: the train step's host time 58 -> 48 ms, see
``benchmarks/host_overhead.py``). Under ``torch.compile`` the torch checkpoint is used (the compiler
traces it).

The recomputation is the same forward, bit for bit: the dense-layer backend
(:func:`pamnet_fast.ops.aten_linear`) and the autocast state of the forward are restored for it.
Double backward (``create_graph=True``) through a checkpointed block is refused with an error.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .. import ops

# module -> ((owner module, name, parameter), ...): the parameters as registered, checked on each use
_PARAMS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _parameters(module: nn.Module) -> Tuple[nn.Parameter, ...]:
    """``tuple(module.parameters())``, cached: walking the module tree on every call costs more than
    the block's kernels; the cache is checked against the registered parameters (dict lookups)."""
    entries = _PARAMS.get(module)
    if entries is None or any(owner._parameters.get(name) is not p for owner, name, p in entries):
        entries = tuple((owner, name, p) for owner in module.modules()
                        for name, p in owner._parameters.items() if p is not None)
        _PARAMS[module] = entries
    return tuple(p for _, _, p in entries)


def same_dense_backend():
    """``context_fn`` of ``torch.utils.checkpoint`` (the streamed path): the recomputation uses the
    dense-layer backend of the forward."""
    aten = ops.linear_backend() == "aten"
    return contextlib.nullcontext(), (ops.aten_linear() if aten else contextlib.nullcontext())


def wants_checkpoint(module: nn.Module, *tensors) -> bool:
    """Recompute ``module``'s block in backward: only when autograd records, ``grad_checkpointing``
    is set on the module (default True) and something involved requires grad. The grad-mode test
    comes first (inference pays nothing)."""
    if not (torch.is_grad_enabled() and getattr(module, "grad_checkpointing", True)):
        return False
    return (any(isinstance(t, Tensor) and t.requires_grad for t in tensors)
            or any(p.requires_grad for p in _parameters(module)))


class Recompute(torch.autograd.Function):
    """``fn(*args)`` recorded as one node: ``forward(ctx, fn, num_args, state, *args_and_params)``."""

    @staticmethod
    def forward(ctx, fn: Callable, num_args: int, state: tuple, *inputs):
        ctx.fn, ctx.num_args, ctx.state = fn, num_args, state
        ctx.set_materialize_grads(False)
        tensors = [t for t in inputs if isinstance(t, Tensor)]
        ctx.layout = [isinstance(t, Tensor) for t in inputs]
        ctx.others = [None if isinstance(t, Tensor) else t for t in inputs]
        ctx.save_for_backward(*tensors)
        with torch.no_grad():
            out = fn(*inputs[:num_args])
        ctx.single = isinstance(out, Tensor)
        return out

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward (create_graph=True) through a checkpointed PAMNet block "
                               "is not supported; build the model with activation_checkpointing=False")
        saved = iter(ctx.saved_tensors)
        inputs = [next(saved) if is_tensor else other for is_tensor, other in zip(ctx.layout, ctx.others)]
        args = [t.detach().requires_grad_(t.requires_grad) if isinstance(t, Tensor) else t
                for t in inputs[:ctx.num_args]]
        params = inputs[ctx.num_args:]
        aten, device_type, autocast, dtype = ctx.state
        cast = (torch.autocast(device_type, dtype=dtype, enabled=autocast) if dtype is not None
                else contextlib.nullcontext())
        with torch.enable_grad(), (ops.aten_linear() if aten else contextlib.nullcontext()), cast:
            out = ctx.fn(*args)
        outs = (out,) if ctx.single else tuple(out)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wanted = [t for t in args if isinstance(t, Tensor) and t.requires_grad] + \
                 [p for p in params if p.requires_grad]
        found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                         allow_unused=True) if pairs and wanted else ())
        result = [next(found) if isinstance(t, Tensor) and t.requires_grad else None for t in args]
        result += [next(found) if p.requires_grad else None for p in params]
        return (None, None, None, *result)


def maybe_checkpoint(module: nn.Module, fn: Callable, *args):
    """``fn(*args)`` (``fn`` a method or a sub-module of ``module``), checkpointed when
    :func:`wants_checkpoint`; the recomputation is bitwise the same forward, so values and
    gradients are unchanged. ``args`` may hold ``None`` and index tensors."""
    if not wants_checkpoint(module, *args):
        return fn(*args)
    if torch.compiler.is_compiling():  # the compiler traces torch's checkpoint (aten dense layers)
        return checkpoint(fn, *args, use_reentrant=False)
    device = next((t.device.type for t in args if isinstance(t, Tensor)), "cpu")
    if torch.amp.is_autocast_available(device):
        state = (ops.linear_backend() == "aten", device, torch.is_autocast_enabled(device),
                 torch.get_autocast_dtype(device))
    else:  # e.g. the meta device
        state = (ops.linear_backend() == "aten", device, False, None)
    return Recompute.apply(fn, len(args), state, *args, *_parameters(module))
