r"""Activation checkpointing of the PAMNet layers' MLP blocks: recompute in backward, keep only inputs.

:func:`maybe_checkpoint` wraps a block in ``torch.utils.checkpoint(use_reentrant=False)`` when autograd
records. The recomputation is the same forward, bit for bit: it runs on the dense-layer backend of the
forward (:func:`same_dense_backend`; :func:`pamnet_fast.ops.aten_linear` may be active in one pass and
not the other), so values and gradients do not change. ``PAMNetConfig(activation_checkpointing=...)``:
``"edges"`` (default) recomputes the per-edge and per-triplet blocks only, ``True`` also the node MLPs
(least memory), ``False`` nothing (least time): ``benchmarks/host_overhead.py`` and
``benchmarks/saved_activations.py`` measure the trade. A torch checkpoint block costs host time of
its own (its saved-tensor hooks and recomputation frame), so few, large blocks.

A custom autograd node per block (parameters as explicit inputs, ``torch.autograd.grad`` inside its
backward) was tried: 10 % less host time per train step on a tiny batch, but it breaks under module
backward hooks (``FlopCounterMode``) and double backward, which torch's checkpoint supports.
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
    """``tuple(module.parameters())``, cached: walking the module tree on every call costs more host
    time than the block's kernels take to launch; the cache is checked against the registered
    parameters (dict lookups)."""
    entries = _PARAMS.get(module)
    if entries is None or any(owner._parameters.get(name) is not p for owner, name, p in entries):
        entries = tuple((owner, name, p) for owner in module.modules()
                        for name, p in owner._parameters.items() if p is not None)
        _PARAMS[module] = entries
    return tuple(p for _, _, p in entries)


def same_dense_backend():
    """``context_fn`` of ``torch.utils.checkpoint``: the recomputation uses the dense-layer backend of
    the forward."""
    aten = ops.linear_backend() == "aten"
    return contextlib.nullcontext(), (ops.aten_linear() if aten else contextlib.nullcontext())


def wants_checkpoint(module: nn.Module, *tensors, node_level: bool = False) -> bool:
    """Recompute ``module``'s block in backward: only when autograd records, ``grad_checkpointing``
    is set on the module (``True``: every block; ``"edges"``, the default: not the ``node_level``
    blocks; ``False``: none) and something involved requires grad. The grad-mode test comes first, so
    inference pays nothing (walking the parameters first was a quarter of an inference forward's host
    time)."""
    mode = getattr(module, "grad_checkpointing", "edges")
    if not (torch.is_grad_enabled() and mode) or (node_level and mode == "edges"):
        return False
    return (any(isinstance(t, Tensor) and t.requires_grad for t in tensors)
            or any(p.requires_grad for p in _parameters(module)))


def maybe_checkpoint(module: nn.Module, fn: Callable, *args, node_level: bool = False):
    """``fn(*args)`` (``fn`` a method or a sub-module of ``module``), checkpointed when
    :func:`wants_checkpoint` (``node_level``: a block of per-node activations). ``args`` may hold
    ``None`` and index tensors."""
    if not wants_checkpoint(module, *args, node_level=node_level):
        return fn(*args)
    # The blocks draw no random numbers: saving and restoring the RNG states (CPU and every CUDA
    # device, per block) would be host time for nothing.
    if torch.compiler.is_compiling():  # compiled: aten dense layers in both passes already
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False,
                      context_fn=same_dense_backend)
