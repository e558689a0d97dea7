r"""Numerical precision of training and inference (``pamnet-fast train --precision``).

* ``fp32`` (default): weights, inputs and arithmetic in float32.
* ``bf16``: mixed precision. Weights, optimizer state, EMA and the loss stay float32; the forward runs
  under ``torch.autocast(device_type, dtype=torch.bfloat16)``, so dense layers and elementwise chains
  run in bfloat16 while the fused ops (edge/triplet sums, basis functions) receive float32 and
  accumulate in float32 (their autocast rule: :func:`pamnet_fast.ops.library.register_autocast_fp32`).
  No loss scaling is needed: bfloat16 has float32's exponent range.
* ``fp64``: weights and floating inputs in float64 (reference runs and numerical checks).

The precision of a run is stored in its checkpoints (``train_config["precision"]``); ``evaluate``,
``predict`` and ``score`` run the model in it (:func:`precision_of`).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16", "fp64")


class Precision:
    """How a model, its batches and its forward are set up for one of :data:`PRECISIONS`."""

    def __init__(self, name: str = "fp32"):
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
        self.name = name
        self.param_dtype = torch.float64 if name == "fp64" else torch.float32
        self.autocast_dtype: Optional[torch.dtype] = torch.bfloat16 if name == "bf16" else None
        # dtype of the loss and of predictions handed back (never bfloat16)
        self.output_dtype = self.param_dtype

    def __repr__(self) -> str:
        return f"Precision({self.name!r})"

    def check_device(self, device: torch.device) -> None:
        """Refuse a precision the device cannot run (bf16 on a GPU without bfloat16 support)."""
        device = torch.device(device)
        if self.autocast_dtype is None:
            return
        if not torch.amp.is_autocast_available(device.type):
            raise ValueError(f"--precision {self.name}: torch.autocast is not available on {device.type}")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 "
                             f"support; use --precision fp32")

    def module(self, model: nn.Module) -> nn.Module:
        """``model`` with floating parameters/buffers in :attr:`param_dtype` (in place, returned)."""
        return model.to(self.param_dtype) if self.name == "fp64" else model

    def batch(self, batch):
        """A PyG batch with its floating tensors (positions, features, targets) in float64 under
        ``fp64``; unchanged otherwise (autocast casts inside the forward)."""
        if self.name != "fp64":
            return batch
        return batch.apply(lambda t: t.double() if t.is_floating_point() else t)

    def autocast(self, device: torch.device):
        """Context for the forward: ``torch.autocast`` under ``bf16``, nothing otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.autocast_dtype)

    def output(self, pred: Tensor) -> Tensor:
        """A forward's output in :attr:`output_dtype` (bf16 autocast returns bfloat16 from the last
        dense layer; the loss and the reported predictions are float32)."""
        return pred if pred.dtype == self.output_dtype else pred.to(self.output_dtype)


def precision_of(state: dict) -> Precision:
    """The precision a checkpoint's run was trained in (``fp32`` for runs written before it existed)."""
    return Precision((state.get("train_config") or {}).get("precision") or "fp32")
