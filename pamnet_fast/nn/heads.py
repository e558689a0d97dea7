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


def expand_complexes(batch):
    r"""The three graphs of every complex of a collated batch, as one graph batch.

    ``batch``: complexes (PyG ``Batch`` of ``Data`` with ``x [N, F]``, ``pos [N, 3]``, ``ligand [N]``
    bool, ``batch [N]``; see :func:`pamnet_fast.data.complexes.complex_data`). Returns a ``Data`` with
    ``x``, ``pos``, ``batch`` over graphs ``3s`` (complex = all atoms of sample ``s``), ``3s + 1``
    (its pocket atoms), ``3s + 2`` (its ligand atoms), ``num_graphs = 3S``, and per graph ``role``
    (0, 1, 2), ``sign`` (+1, -1, -1) and ``sample``. Built with index arithmetic (no Python loop over
    samples), so the model runs all three graphs of all samples in one pass. The graphs never interact:
    every plex is built per graph (the authors' code shifts copies by +100/+200 Å instead).
    """
    from torch_geometric.data import Data
    lig = batch.ligand.view(-1).bool()
    n = lig.numel()
    sample = getattr(batch, "batch", None)
    if sample is None:
        sample = torch.zeros(n, dtype=torch.long, device=lig.device)
    num_samples = getattr(batch, "num_graphs", None)
    if not isinstance(num_samples, int):
        num_samples = int(sample.max()) + 1 if n else 0
    atoms = torch.arange(n, device=lig.device)
    pocket_atoms, ligand_atoms = atoms[~lig], atoms[lig]
    node = torch.cat([atoms, pocket_atoms, ligand_atoms])
    graph = torch.cat([3 * sample, 3 * sample[pocket_atoms] + POCKET, 3 * sample[ligand_atoms] + LIGAND])
    graph, order = torch.sort(graph, stable=True)  # graphs contiguous, atom order kept inside each
    node = node[order]
    role = torch.tensor([COMPLEX, POCKET, LIGAND], device=lig.device).repeat(num_samples)
    out = Data(x=batch.x.index_select(0, node), pos=batch.pos.index_select(0, node), batch=graph,
               role=role, sample=torch.arange(num_samples, device=lig.device).repeat_interleave(3))
    out.sign = torch.tensor(ROLE_SIGN, dtype=batch.pos.dtype, device=lig.device)[role]
    out.num_graphs = 3 * num_samples
    out.num_samples = num_samples
    return out


def complex_batch(pockets: Sequence, ligands: Sequence):
    r"""The three-graph batch (see :func:`expand_complexes`) of complexes given as pocket and ligand
    ``Data`` (each with ``x [n, F]`` and ``pos [n, 3]``)."""
    from torch_geometric.data import Batch, Data
    if len(pockets) != len(ligands):
        raise ValueError(f"complex_batch: {len(pockets)} pockets but {len(ligands)} ligands")
    cplx = [Data(x=torch.cat([p.x, l.x]), pos=torch.cat([p.pos, l.pos]),
                 ligand=torch.cat([torch.zeros(len(p.pos), dtype=torch.bool),
                                   torch.ones(len(l.pos), dtype=torch.bool)]))
            for p, l in zip(pockets, ligands)]
    return expand_complexes(Batch.from_data_list(cplx))


class ProteinLigandHead(nn.Module):
    r"""Binding free energy with three weight-sharing passes in one batch:

    .. math:: \Delta G = G(\text{complex}) - G(\text{pocket}) - G(\text{ligand}),
              \qquad G(\cdot) = \sum_i \sum_t \sum_p \alpha^t_{p,i}\, o^t_{p,i}

    ``model`` is a :class:`~.pamnet.PAMNet` with ``readout='sum'`` (e.g. ``PAMNetConfig.pdbbind()``);
    ``forward(batch)`` takes a collated batch of complexes (``x``, ``pos``, ``ligand`` mask; expanded
    by :func:`expand_complexes`) or an already expanded batch (``sign``, ``sample``), and returns
    ``[num_samples, out_dim]``: one model call for the 3S graphs.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def reset_parameters(self):
        self.model.reset_parameters()

    @property
    def config(self):
        return self.model.config

    def forward(self, batch, graphs=None) -> Tensor:
        """``graphs``: optionally ``self.model.build_graphs(batch)`` of the expanded batch (then no
        host synchronization here either)."""
        if getattr(batch, "sign", None) is None:
            if getattr(batch, "ligand", None) is None:
                raise ValueError("ProteinLigandHead needs complexes (data.ligand, the ligand-atom mask) or "
                                 "a complex_batch (data.sign, data.sample)")
            batch = expand_complexes(batch)
        per_graph = self.model(batch, graphs)  # [3S, out_dim]
        num_samples = getattr(batch, "num_samples", None)
        if not isinstance(num_samples, int):  # expanded elsewhere: read it from the device
            num_samples = int(batch.sample.max()) + 1 if batch.sample.numel() else 0
        return signed_sum(per_graph, batch.sign, batch.sample, num_samples)
