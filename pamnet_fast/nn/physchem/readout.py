r"""PhysChem's readout: an attentive, GRU-updated molecule vector.

.. math::
    h_M^{(0)} = \frac{1}{|M|} \sum_{v \in M} \mathrm{LReLU}(W_0 h_v), \qquad
    \beta_v = \mathrm{softmax}_{v \in M}\big(w_t^\top [h_M^{(t)} \| h_v]\big), \qquad
    \mu_M = \mathrm{ELU}\Big(\sum_{v \in M} \beta_v\, \mathrm{LReLU}(W_t h_v)\Big)

    h_M^{(t+1)} = \mathrm{LReLU}(\mathrm{GRU}(\mu_M, h_M^{(t)})), \qquad \hat y = W_y h_M^{(T)} + b_y

``h_v`` are the atom states of every ChemNet block concatenated; ``T`` = ``iterations`` (2).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graph import segment_softmax, segment_sum


class Readout(nn.Module):
    def __init__(self, hv_dim: int, hm_dim: int, mm_dim: int, out_dim: int, iterations: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.vertex2mol = nn.Linear(hv_dim, hm_dim)
        self.align = nn.ModuleList([nn.Linear(hm_dim + hv_dim, 1) for _ in range(iterations)])
        self.attend = nn.ModuleList([nn.Linear(hv_dim, mm_dim) for _ in range(iterations)])
        self.gru = nn.ModuleList([nn.GRUCell(mm_dim, hm_dim) for _ in range(iterations)])
        self.head = nn.Linear(hm_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def molecule_vector(self, hv: Tensor, batch: Tensor, num_graphs: int,
                        counts: Optional[Tensor] = None) -> Tensor:
        """``hv [N, hv_dim]`` -> ``[G, hm_dim]``. ``counts [G]``: atoms per molecule, when known
        (``bincount`` sizes its output from the data: a host read)."""
        if counts is None:
            counts = torch.bincount(batch, minlength=num_graphs)
        counts = counts.clamp(min=1)[:, None]
        hm = segment_sum(F.leaky_relu(self.vertex2mol(hv)), batch, num_graphs) / counts
        for align, attend, gru in zip(self.align, self.attend, self.gru):
            hv_d, hm_d = self.dropout(hv), self.dropout(hm)
            beta = segment_softmax(align(torch.cat([hm_d[batch], hv_d], 1)).squeeze(1), batch, num_graphs)
            mu = F.elu(segment_sum(beta[:, None] * F.leaky_relu(attend(hv_d)), batch, num_graphs))
            hm = F.leaky_relu(gru(mu, hm))
        return hm

    def forward(self, hv: Tensor, batch: Tensor, num_graphs: int,
                counts: Optional[Tensor] = None) -> Tensor:
        return self.head(self.molecule_vector(hv, batch, num_graphs, counts))
