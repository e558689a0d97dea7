r"""Building blocks (MLP, residual block, update/output block) and the global message passing layer.

Parameter names follow the authors' PAMNet code (``mlp_x1.0.0.weight``, ``res1.mlp.1.0.bias``, ``W``,
...), so their state dicts load with a near-identity name map (:mod:`pamnet_fast.nn.compat`). Like
the local layers, the global layer trusts its index inputs (``check_values=False``: see
:mod:`pamnet_fast.nn.local_mp`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import ops
from .dense import MLP, Linear
from .graphs import PlexTransposes
from .recompute import maybe_checkpoint


def reset_mlp(mlp: nn.Module):
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()


def glorot_(t: Tensor):
    a = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    with torch.no_grad():
        t.uniform_(-a, a)


class Res(nn.Module):
    r"""Residual block :math:`x + \mathrm{SiLU}(W_2\,\mathrm{SiLU}(W_1 x + b_1) + b_2)`. ``[N, F] -> [N, F]``.

    The second layer adds ``x`` through :func:`pamnet_fast.ops.linear_silu`'s ``residual`` (on CUDA,
    without autograd recording: one kernel for the matmul, bias, SiLU and the add)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = MLP([dim, dim, dim])

    def reset_parameters(self):
        reset_mlp(self.mlp)

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.mlp.linear(0), self.mlp.linear(1)
        h = ops.linear_silu(x, first.weight, first.bias)
        return ops.linear_silu(h, second.weight, second.bias, residual=x)


def split_message_weight(lin: nn.Linear, dim: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Blocks of a ``Linear(3F, F)`` applied to ``[x_i || x_j || e_ij]``: (W_i, W_j, W_e), each ``[F, F]``.
    One ``split`` (its backward is one ``cat``; three slices would each zero-fill and copy a
    ``[F, 3F]`` gradient, then add them)."""
    w_i, w_j, w_e = lin.weight.split(dim, dim=1)
    return w_i, w_j, w_e


class PlexLayer(nn.Module):
    r"""Shared part of the global and local layers: the update block and the output head.

    Update (the paper's skip connection): :math:`x' = \mathrm{Res}_3(\mathrm{Res}_2(\mathrm{Res}_1(
    \mathrm{MLP}_{x2}(h)) + x))` where :math:`h` is the message-updated embedding. Output head:
    :math:`z = \mathrm{MLP}_{out}(x')` (three Linear+SiLU), node output :math:`o = W_{out} z + b`
    ``[N, out_dim]`` and attention score :math:`s = z W` ``[N, 1]``.
    """

    grad_checkpointing: Union[bool, str] = "edges"  # see PAMNetConfig.activation_checkpointing

    def __init__(self, dim: int, out_dim: int = 1):
        super().__init__()
        self.dim, self.out_dim = dim, out_dim
        self.mlp_x1 = MLP([dim, dim])
        self.mlp_x2 = MLP([dim, dim])
        self.res1 = Res(dim)
        self.res2 = Res(dim)
        self.res3 = Res(dim)
        self.mlp_out = MLP([dim, dim, dim, dim])
        self.W_out = Linear(dim, out_dim)
        self.W = nn.Parameter(torch.empty(dim, 1))

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        glorot_(self.W)

    def update_and_output(self, h: Tensor, res_x: Tensor):
        """``h``: message-updated ``[N, F]``; returns ``(x' [N, F], out [N, out_dim], score [N, 1],
        z [N, F])``. With ``PAMNetConfig(activation_checkpointing=True)`` the ten node MLPs are
        recomputed in backward (only ``h`` and ``res_x`` are kept); by default their activations
        are kept."""
        return maybe_checkpoint(self, self._update_and_output, h, res_x, node_level=True)

    def _update_and_output(self, h: Tensor, res_x: Tensor):
        x = self.res1(self.mlp_x2(h)) + res_x
        x = self.res3(self.res2(x))
        z = self.mlp_out(x)
        return x, self.W_out(z), z @ self.W, z


class GlobalMessagePassing(PlexLayer):
    r"""Global plex layer (non-local interactions within the global cutoff).

    .. math::
        h_i = \phi_{x1}(x_i), \qquad
        m_i = \sum_{j \in \mathcal N_g(i)} \mathrm{SiLU}\big(W_m [h_i \,\|\, h_j \,\|\, e_{ij}] + b_m\big)
              \odot W_e e_{ij}, \qquad
        x'_i = \mathrm{Update}(h_i + m_i, x_i)

    with :math:`e_{ij}` the shared projection of the global radial basis. The concat Linear is
    factored exactly as :math:`W_m[h_i\|h_j\|e] = W_i h_i + W_j h_j + W_{e'} e`: node projections
    ``p = W_i h + b``, ``q = W_j h`` (``[N, F]``) and the edge term ``r = W_{e'} e`` (``[E, F]``) go to
    :func:`pamnet_fast.ops.fused_edge_message`, which never builds the ``[E, 3F]`` concat nor the
    activation.

    Shapes: ``x [N, F]``, ``edge_attr [E, F]``, ``src [E]`` (source of each target-sorted edge),
    ``ptr [N + 1]``; or ``edge_attr [R, F]`` with ``edge_row [E]`` (edges sharing rows, e.g. both
    directions of a pair: the edge projections then cost R instead of E rows). Returns ``(x' [N, F],
    out [N, out_dim], score [N, 1], z [N, F])``.
    """

    def __init__(self, dim: int, out_dim: int = 1):
        super().__init__(dim, out_dim)
        self.mlp_m = MLP([3 * dim, dim])
        self.W_edge_attr = Linear(dim, dim, bias=False)
        self.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, src: Tensor, ptr: Tensor,
                edge_row: Optional[Tensor] = None, transposes: Optional[PlexTransposes] = None):
        h, p, q = self.node_terms(x)
        h = h + self.edge_sum(p, q, edge_attr, src, ptr, edge_row, transposes)
        return self.update_and_output(h, x)

    def node_terms(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(h, p, q)``, each ``[N, F]``: the embedding and its target / source projections."""
        h = self.mlp_x1(x)
        lin = self.mlp_m.linear(0)
        w_i, w_j, _ = split_message_weight(lin, self.dim)
        return h, ops.linear(h, w_i, lin.bias), ops.linear(h, w_j)

    def edge_sum(self, p: Tensor, q: Tensor, edge_attr: Tensor, src: Tensor, ptr: Tensor,
                 edge_row: Optional[Tensor] = None, transposes: Optional[PlexTransposes] = None
                 ) -> Tensor:
        """:math:`m_i` ``[len(ptr) - 1, F]`` for the targets of ``ptr`` (``p`` their rows; ``q`` all
        sources): a block of targets gives its rows of the full sum (the streamed global plex).
        ``transposes``: of this very ``src``/``edge_row``/``ptr`` (the backward's, built once)."""
        r = ops.linear(edge_attr, split_message_weight(self.mlp_m.linear(0), self.dim)[2])
        s = self.W_edge_attr(edge_attr)
        t = transposes
        return ops.fused_edge_message(p, q, r, s, ptr, src, edge_row, check_values=False,
                                      src_transpose=None if t is None else t.src,
                                      row_transpose=None if t is None or edge_row is None else t.row)
