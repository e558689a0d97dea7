r"""Attention fusion of the two plexes and the graph readouts."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionFusion(nn.Module):
    r"""Fuse the per-layer outputs of the global and local plexes with node-wise attention.

    .. math::
        \alpha^t_{p,i} = \frac{\exp(\mathrm{LeakyReLU}_{0.2}(s^t_{p,i}))}
                              {\sum_{p' \in \{g, l\}} \exp(\mathrm{LeakyReLU}_{0.2}(s^t_{p',i}))},
        \qquad y_i = \sum_{t=1}^{T} \sum_{p \in \{g, l\}} \alpha^t_{p,i}\, o^t_{p,i}

    Inputs: lists over layers of ``out [N, out_dim]`` and ``score [N, 1]`` per plex. Returns
    ``(y [N, out_dim], alpha [T, N, 2])`` (plex order: global, local). With ``out_l`` empty (the
    global plex alone) every weight is 1 and ``alpha`` is ``[T, N, 1]``.
    """

    def __init__(self, negative_slope: float = 0.2):
        super().__init__()
        self.negative_slope = negative_slope

    def reset_parameters(self):
        pass

    def forward(self, out_g: List[Tensor], out_l: List[Tensor], att_g: List[Tensor],
                att_l: List[Tensor]) -> Tuple[Tensor, Tensor]:
        if not out_l:
            out_g = torch.stack(out_g)
            return out_g.sum(dim=0), out_g.new_ones(out_g.shape[:2] + (1,))
        score = torch.cat([torch.stack(att_g), torch.stack(att_l)], dim=-1)  # [T, N, 2]
        alpha = torch.softmax(F.leaky_relu(score, self.negative_slope), dim=-1)
        out = torch.stack(out_g) * alpha[..., :1] + torch.stack(out_l) * alpha[..., 1:]
        return out.sum(dim=0), alpha


def graph_sum(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``out[g] = sum_{i: batch_i = g} x_i``; ``x [N, C]`` -> ``[num_graphs, C]``."""
    return x.new_zeros(num_graphs, x.size(-1)).index_add_(0, batch, x)


def graph_mean(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Mean over the nodes of each graph (0 for an empty graph)."""
    # counted with index_add (bincount sizes its output from the data: a host sync)
    count = x.new_zeros(num_graphs).index_add_(0, batch, x.new_ones(batch.numel())).clamp_(min=1)
    return graph_sum(x, batch, num_graphs) / count.unsqueeze(-1)


def signed_sum(graph_out: Tensor, sign: Tensor, group: Tensor, num_groups: int) -> Tensor:
    r"""Signed combination of graph outputs: :math:`\Delta_s = \sum_{g: \mathrm{group}_g = s}
    \mathrm{sign}_g\, G_g`, e.g. :math:`\Delta G = G(\text{complex}) - G(\text{pocket}) -
    G(\text{ligand})` with signs (+1, -1, -1). ``graph_out [G, C]``, ``sign [G]``, ``group [G]``."""
    return graph_out.new_zeros(num_groups, graph_out.size(-1)).index_add_(
        0, group, graph_out * sign.to(graph_out.dtype).unsqueeze(-1))


def readout(x: Tensor, batch: Tensor, num_graphs: int, how: str = "sum") -> Tensor:
    """Graph readout of node values: ``"sum"`` (QM9, PDBbind) or ``"mean"`` (RNA)."""
    if how == "sum":
        return graph_sum(x, batch, num_graphs)
    if how == "mean":
        return graph_mean(x, batch, num_graphs)
    raise ValueError(f"readout must be 'sum' or 'mean', got {how!r}")
