r"""Dense layers of the PAMNet models, on :func:`pamnet_fast.ops.linear` (oneDNN on CPU float32) and
:func:`pamnet_fast.ops.linear_silu` (without autograd recording, one kernel: oneDNN on CPU float32, a
Triton GEMM on CUDA).

State-dict names are those of ``nn.Linear`` / ``nn.Sequential(nn.Linear, nn.SiLU)``, so checkpoints of
either form load into the other.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .. import ops


class Linear(nn.Linear):
    r""":math:`y = x W^T + b`, ``[..., in] -> [..., out]``; ``nn.Linear`` on :func:`pamnet_fast.ops.linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.linear(x, self.weight, self.bias)


class LinearSiLU(nn.Sequential):
    r""":math:`y = \mathrm{SiLU}(x W^T + b)` as ``Sequential(Linear, SiLU)``; without autograd recording
    the SiLU is fused into the matmul (:func:`pamnet_fast.ops.linear_silu`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(Linear(in_channels, out_channels), nn.SiLU())

    def forward(self, x: Tensor) -> Tensor:
        lin = self[0]
        return ops.linear_silu(x, lin.weight, lin.bias)


def MLP(channels: Sequence[int]) -> nn.Sequential:
    """``[Linear(c0, c1), SiLU, Linear(c1, c2), SiLU, ...]`` as nested ``Sequential(Linear, SiLU)``."""
    return nn.Sequential(*[LinearSiLU(channels[i - 1], channels[i]) for i in range(1, len(channels))])
