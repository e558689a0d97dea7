r"""Task heads: the E(3)-equivariant dipole head and the protein-ligand binding free energy head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .dense import Linear
from .fusion import graph_mean, graph_sum, signed_sum
from .local_mp import edge_rows


class DipoleHead(nn.Module):
    r"""Equivariant dipole moment from PAMNet's invariant features (paper: "Preservation of
    E(3)-equivariance").

    Per node :math:`i` and plex :math:`p \in \{g, l\}` a geometric vector from relative positions,
    weighted by an invariant function of the shared edge embedding :math:`e_{ij}`:

    .. math::
        \nu_{p,i} = \sum_{j \in \mathcal N_p(i)} (w_p^\top e_{ij} + c_p)\,(\vec r_i - \vec r_j)

    and scalar weights from each layer's output-head features :math:`z^t_{p,i}` fused with the same
    attention :math:`\alpha^t_{p,i}` as the scalar output:

    .. math::
        \vec\mu_G = \sum_{t=1}^{T} \sum_{i \in G} \sum_{p} \alpha^t_{p,i}\, (W'_p z^t_{p,i})\,\nu_{p,i}
                  \;+\; \sum_{i \in G} (q_i - \bar q_G)(\vec r_i - \bar{\vec r}_G),
        \qquad q_i = \sum_t \sum_p \alpha^t_{p,i}\, (W''_p z^t_{p,i})

    The first term is the paper's :math:`\sum_t\sum_i\sum_p \alpha_p W'_p z_p \nu_p`; the second (on by
    default, ``charges=True``) is the physical dipole of learned, neutralised partial charges
    :math:`q_i`. Every vector is a difference of positions times an E(3)-invariant scalar, so
    :math:`\vec\mu` rotates and reflects with the input and is translation invariant.

    ``forward(state) -> [num_graphs, 3]`` (``state``: :class:`~.pamnet.PAMNetState`).
    """

    def __init__(self, dim: int, charges: bool = True):
        super().__init__()
        self.charges = charges
        c = 2 if charges else 1
        self.lin_g = Linear(dim, c, bias=False)  # W'_g (and W''_g)
        self.lin_l = Linear(dim, c, bias=False)
        self.phi_g = Linear(dim, 1)
        self.phi_l = Linear(dim, 1)
        self.reset_parameters()

    def reset_parameters(self):
        for m in (self.lin_g, self.lin_l, self.phi_g, self.phi_l):
            m.reset_parameters()

    @staticmethod
    def geometric_vectors(pos: Tensor, edge_index: Tensor, weight: Tensor) -> Tensor:
        r""":math:`\nu_i = \sum_{j \to i} w_{ji} (\vec r_i - \vec r_j)`; ``weight [E, 1]`` -> ``[N, 3]``."""
        src, dst = edge_index[0], edge_index[1]
        rel = pos.index_select(0, dst) - pos.index_select(0, src)
        return pos.new_zeros(pos.shape).index_add_(0, dst, weight * rel)

    def forward(self, state) -> Tensor:
        g = state.graphs
        alpha = state.alpha  # [T, N, 2]
        s_g = (self.lin_g(torch.stack(state.z_g)) * alpha[..., :1]).sum(0)  # [N, c]
        s_l = (self.lin_l(torch.stack(state.z_l)) * alpha[..., 1:]).sum(0)
        # rbf_g / rbf_l hold one row per pair when the edge terms are shared: expanded per edge
        w_g = edge_rows(self.phi_g(state.rbf_g), g.edge_row_g)
        w_l = edge_rows(self.phi_l(state.rbf_l), g.edge_row_l)
        nu_g = self.geometric_vectors(state.pos, g.edge_index_g, w_g)
        nu_l = self.geometric_vectors(state.pos, g.edge_index_l, w_l)
        mu = s_g[:, :1] * nu_g + s_l[:, :1] * nu_l
        if self.charges:
            q = s_g[:, 1:] + s_l[:, 1:]
            q = q - graph_mean(q, state.batch, state.num_graphs).index_select(0, state.batch)
            centre = graph_mean(state.pos, state.batch, state.num_graphs).index_select(0, state.batch)
            mu = mu + q * (state.pos - centre)
        return graph_sum(mu, state.batch, state.num_graphs)


# --- protein-ligand ---------------------------------------------------------------------------

COMPLEX, POCKET, LIGAND = 0, 1, 2
ROLE_SIGN = (1.0, -1.0, -1.0)


def complex_batch(pockets: Sequence, ligands: Sequence):
    r"""One PyG ``Batch`` holding, for each sample s, three graphs: complex (pocket + ligand atoms),
    pocket, ligand. Each input is a ``Data`` with ``x [n, F]`` and ``pos [n, 3]``.

    Adds per-graph ``role [3S]`` (0 complex, 1 pocket, 2 ligand), ``sign [3S]`` (+1, -1, -1) and
    ``sample [3S]``. The graphs never interact: every plex is built per graph of ``batch``, so no
    coordinate shifts are needed (the authors' code shifts copies by +100/+200 Å and recovers the sign
    from an x-coordinate test).
    """
    from torch_geometric.data import Batch, Data
    if len(pockets) != len(ligands):
        raise ValueError(f"complex_batch: {len(pockets)} pockets but {len(ligands)} ligands")
    graphs = []
    for p, l in zip(pockets, ligands):
        cplx = Data(x=torch.cat([p.x, l.x]), pos=torch.cat([p.pos, l.pos]))
        for role, d in ((COMPLEX, cplx), (POCKET, p), (LIGAND, l)):
            graphs.append(Data(x=d.x, pos=d.pos, role=torch.tensor([role])))
    batch = Batch.from_data_list(graphs)
    batch.sign = torch.tensor(ROLE_SIGN, dtype=batch.pos.dtype)[batch.role]
    batch.sample = torch.arange(len(pockets)).repeat_interleave(3)
    return batch


class ProteinLigandHead(nn.Module):
    r"""Binding free energy with three weight-sharing passes in one batch:

    .. math:: \Delta G = G(\text{complex}) - G(\text{pocket}) - G(\text{ligand}),
              \qquad G(\cdot) = \sum_i \sum_t \sum_p \alpha^t_{p,i}\, o^t_{p,i}

    ``model`` is a :class:`~.pamnet.PAMNet` with ``readout='sum'`` (e.g. ``PAMNetConfig.pdbbind()``);
    ``forward(batch)`` takes :func:`complex_batch` output (``sign``, ``sample``) and returns
    ``[num_samples, out_dim]``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def reset_parameters(self):
        self.model.reset_parameters()

    def forward(self, batch) -> Tensor:
        per_graph = self.model(batch)  # [3S, out_dim]
        num_samples = int(batch.sample.max()) + 1 if batch.sample.numel() else 0
        return signed_sum(per_graph, batch.sign, batch.sample, num_samples)
