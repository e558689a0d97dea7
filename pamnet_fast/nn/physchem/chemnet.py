r"""ChemNet: a conformation-aware MPNN over the bond graph (triplet messages, attention, GRU updates).

For a bond :math:`j \to i` (stored at the target :math:`i`) and the triplets :math:`(j_2 \to i, j \to i)`
of bonds sharing atom :math:`i` (the pair of a bond with itself included), with the current
conformation :math:`x`, :math:`d_{ij} = \|x_i - x_j\|` and :math:`\theta_{j i j_2}` the angle at :math:`i`:

.. math::
    a_{ji} = W_a [h_i \| h_j \| h_{ji} \| \phi(d_{ij})], \qquad
    m_{i \to j} = \max_{j_2} \mathrm{LReLU}\big(a_{ji} + W_b [h_{j_2 i} \| \phi(d_{i j_2})]
                  + W_\theta \psi(\cos\theta_{j i j_2})\big)

:math:`m_{i \to j}` is the message of bond :math:`i \to j` built from the triplets that share its source
atom :math:`i` (the authors' orientation), and it is delivered to :math:`j`:

.. math::
    \alpha_{i \to j} = \mathrm{softmax}_{i \in N(j)}\big(w^\top [h_j \| m_{i \to j}]\big), \qquad
    \mu_j = \mathrm{ELU}\Big(\sum_i \alpha_{i \to j} W_v m_{i \to j}\Big), \qquad
    \mu_{ij} = \mathrm{LReLU}\big(W_e (m_{i \to j} + m_{j \to i})\big)

    h_j \leftarrow \mathrm{LReLU}(\mathrm{GRU}(\mu_j, h_j)), \qquad
    h_{ij} \leftarrow \mathrm{LReLU}(\mathrm{GRU}(\mu_{ij}, h_{ij}))

:math:`\phi` and :math:`\psi` are Gaussian expansions. The authors build dense ``[2E, 2E]`` masks of
bonds sharing a source atom; here the triplets come from :func:`pamnet_fast.ops.triplets` (one-hop
pairs), the max is a segment max over them and the attention sum a
:func:`pamnet_fast.ops.segment_gather_mul` that reads the messages through the reverse-bond index.
Without a conformation (``x=None``, ChemNet alone) distances and angles are zero.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import ops
from .graph import MolBatch, segment_softmax


class GaussianExpansion(nn.Module):
    """``exp(-((t - c_k) / w)^2)`` for ``num`` centers ``c_k`` evenly spaced in [lo, hi], ``w`` the spacing."""

    def __init__(self, lo: float, hi: float, num: int):
        super().__init__()
        self.register_buffer("centers", torch.linspace(lo, hi, num), persistent=False)
        self.width = (hi - lo) / max(1, num - 1)

    def forward(self, t: Tensor) -> Tensor:
        return torch.exp(-((t[:, None] - self.centers) / self.width) ** 2)


class ChemNetLayer(nn.Module):
    """One message-passing hop: ``(hv [N, hv_dim], he [E, he_dim], x [N, 3] | None) -> (hv, he)``."""

    def __init__(self, hv_dim: int, he_dim: int, mv_dim: int, me_dim: int, num_rbf: int = 16,
                 rbf_max: float = 8.0, num_angle: int = 8, dropout: float = 0.0, update_bonds: bool = True):
        super().__init__()
        self.update_bonds = update_bonds  # False for the model's very last layer: nothing reads its bonds
        self.rbf = GaussianExpansion(0.0, rbf_max, num_rbf)
        self.angle = GaussianExpansion(-1.0, 1.0, num_angle)
        self.edge_term = nn.Linear(2 * hv_dim + he_dim + num_rbf, mv_dim)
        self.partner_term = nn.Linear(he_dim + num_rbf, mv_dim, bias=False)
        self.angle_term = nn.Linear(num_angle, mv_dim, bias=False)
        self.align = nn.Linear(hv_dim + mv_dim, 1)
        self.attend = nn.Linear(mv_dim, mv_dim)
        self.gru_v = nn.GRUCell(mv_dim, hv_dim)
        if update_bonds:
            self.bond_msg = nn.Linear(mv_dim, me_dim)
            self.gru_e = nn.GRUCell(me_dim, he_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.children():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def geometry(self, x: Optional[Tensor], g: MolBatch):
        """``(phi(d) [E, num_rbf], psi(cos theta) [T, num_angle])`` of the bonds and triplets."""
        if x is None:
            zero_e = torch.zeros(g.src.numel(), device=g.src.device)
            zero_t = torch.zeros(g.trip_ji.numel(), device=g.src.device)
            return self.rbf(zero_e) * 0, self.angle(zero_t) * 0
        u = x[g.src] - x[g.dst]                                                      # i -> j
        d = u.norm(dim=-1)
        a, b = u[g.trip_ji], u[g.trip_j2i]
        cos = (a * b).sum(-1) / (d[g.trip_ji] * d[g.trip_j2i]).clamp(min=1e-6)
        return self.rbf(d), self.angle(cos.clamp(-1.0, 1.0))

    def messages(self, hv: Tensor, he: Tensor, x: Optional[Tensor], g: MolBatch) -> Tensor:
        """``m [E]``: row e = (j -> i) holds the message of the reverse bond i -> j."""
        rbf, ang = self.geometry(x, g)
        edge = self.edge_term(torch.cat([hv[g.dst], hv[g.src], he, rbf], 1))      # [E, mv]
        partner = self.partner_term(torch.cat([he, rbf], 1))                        # [E, mv]
        t = F.leaky_relu(edge[g.trip_ji] + partner[g.trip_j2i] + self.angle_term(ang))  # [T, mv]
        out = t.new_full((g.src.numel(), t.shape[1]), float("-inf"))
        idx = g.trip_ji[:, None].expand_as(t)
        return out.scatter_reduce(0, idx, t, "amax", include_self=True)

    def forward(self, hv: Tensor, he: Tensor, x: Optional[Tensor], g: MolBatch):
        hv_in, he_in = self.dropout(hv), self.dropout(he)
        m = self.messages(hv_in, he_in, x, g)            # m[e], e = (j -> i): message of i -> j
        m_in = m[g.rev]                                  # row e' = (i -> j): the message j receives
        score = self.align(torch.cat([hv_in[g.dst], m_in], 1)).squeeze(1)
        alpha = segment_softmax(score, g.dst, hv.shape[0])
        v = self.attend(m)
        mu_v = F.elu(ops.segment_gather_mul(v, g.rev, alpha[:, None].expand(-1, v.shape[1]).contiguous(), g.ptr))
        hv = F.leaky_relu(self.gru_v(mu_v, hv))
        if not self.update_bonds:
            return hv, he
        mu_e = F.leaky_relu(self.bond_msg(m + m_in))
        return hv, F.leaky_relu(self.gru_e(mu_e, he))


class ChemNet(nn.Module):
    """``hops`` :class:`ChemNetLayer` s applied in sequence (one ChemNet block)."""

    def __init__(self, hops: int, last_updates_bonds: bool = True, **kw):
        super().__init__()
        self.layers = nn.ModuleList([ChemNetLayer(**kw, update_bonds=(k < hops - 1 or last_updates_bonds))
                                     for k in range(hops)])

    def reset_parameters(self):
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, hv: Tensor, he: Tensor, x: Optional[Tensor], g: MolBatch):
        for layer in self.layers:
            hv, he = layer(hv, he, x, g)
        return hv, he
