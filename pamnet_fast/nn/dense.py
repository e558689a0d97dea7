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
        lin = self._modules["0"]  # (Sequential's self[0] costs microseconds of host time per call)
        return ops.linear_silu(x, lin.weight, lin.bias)


class MLP(nn.Sequential):
    r"""``[Linear(c0, c1), SiLU, Linear(c1, c2), SiLU, ...]`` as nested ``Sequential(Linear, SiLU)``
    (:class:`LinearSiLU`), ``[..., c0] -> [..., c_L]``:
    :math:`x \mapsto \mathrm{SiLU}(W_L \cdots \mathrm{SiLU}(W_1 x + b_1) \cdots + b_L)`.

    The forward calls :func:`pamnet_fast.ops.linear_silu` on each layer's weights directly, not
    through each :class:`LinearSiLU` module (so hooks on those sub-modules do not fire): the model
    runs hundreds of these small layers per forward, and in the launch-bound regime of a GPU the
    host time of the module calls is what a forward costs."""

    def __init__(self, channels: Sequence[int]):
        super().__init__(*[LinearSiLU(channels[i - 1], channels[i]) for i in range(1, len(channels))])

    def linear(self, i: int) -> nn.Linear:
        """The Linear of layer ``i`` (``self[i][0]``, without Sequential's indexing)."""
        return self._modules[str(i)]._modules["0"]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self._modules.values():
            lin = layer._modules["0"]
            x = ops.linear_silu(x, lin.weight, lin.bias)
        return x
