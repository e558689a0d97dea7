r"""PhysChem (Yang et al., NeurIPS 2021): PhysNet and ChemNet co-trained, conformations learned from the
2D graph.

.. math::
    (h_v, h_e, p, q) = \mathrm{Init}(G), \qquad
    \text{for } b = 1..B:\ \ (h_v', h_e') = \mathrm{ChemNet}(h_v, h_e; q), \ \
    (p, q) = \mathrm{PhysNet}^{T}(p, q; h_v, h_e), \ \ (h_v, h_e) = (h_v', h_e')

    \hat y = \mathrm{Readout}([h_v^{(1)} \| \dots \| h_v^{(B)}]), \qquad
    L = L_{\text{prop}}(\hat y, y) + \lambda \sum_s w_s L_{\text{conn}}(q^{(s)}, y_{\text{conf}})

Each block's PhysNet runs on ChemNet's previous states and each ChemNet on the previous conformation
(the authors' schedule). The property loss is the trainer's; the model adds
:math:`\lambda L_{\text{conn}}` through :meth:`PhysChem.auxiliary_loss` after a training forward.

Input: a PyG batch of :mod:`pamnet_fast.data.molgraphs` items (``x``, ``edge_attr``, ``edge_index``,
``mass``, ``rank``, ``batch``, and ``pos`` / ``rdkit_pos`` as the mode needs). Output: ``[G, out_dim]``.

Departures from the authors' code, on purpose: the initializer's LSTM walks atoms in canonical rank
order (atom-order invariance); the conformation list of the loss includes the initial one; the last
ChemNet layer does not update bond states (nothing reads them; the authors compute and drop them).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from .chemnet import ChemNet
from .config import PhysChemConfig
from .graph import MolBatch, mol_batch
from .initializer import Initializer
from .losses import ConnPairs, conn_pairs, hierarchical_conn_loss, kabsch_rmsd, step_weights
from .physnet import PhysNet

LEARNED = ("physchem", "physchem-rdkit", "physnet")


class PhysChem(nn.Module):
    """PhysChem; ``config.mode`` chooses the training mode (see :data:`config.MODES`).

    After a forward, :attr:`conformations` holds the conformations PhysNet went through (the initial
    one first, ``[N, 3]`` each; empty in the ChemNet-only modes) and :meth:`auxiliary_loss` returns
    :math:`\\lambda L_{\\text{conf}}` of a training forward (``None`` otherwise).
    """

    def __init__(self, config: Optional[PhysChemConfig] = None):
        super().__init__()
        self.config = c = config or PhysChemConfig()
        self.initializer = Initializer(c.atom_dim, c.bond_dim, c.hv_dim, c.he_dim, c.gcn_hidden, c.gcn_out,
                                       c.lstm_layers, c.lstm_out)
        self.learned = c.mode in LEARNED
        if self.learned:
            self.physnet = PhysNet(c.hv_dim, c.he_dim, 3, c.force_hidden, c.tau, c.dynamics, c.dissipation,
                                   c.pair_forces, c.pair_cutoff)
        if c.mode != "physnet":
            self.chemnet = nn.ModuleList([
                ChemNet(c.hops, last_updates_bonds=b < c.num_blocks - 1, hv_dim=c.hv_dim, he_dim=c.he_dim, mv_dim=c.mv_dim, me_dim=c.me_dim,
                        num_rbf=c.num_rbf, rbf_max=c.rbf_max, num_angle=c.num_angle, dropout=c.dropout)
                for b in range(c.num_blocks)])
        from .readout import Readout
        self.readout = Readout(c.hv_dim * c.num_blocks, c.hm_dim, c.mm_dim, c.out_dim, c.readout_iterations,
                               c.dropout)
        self.conformations: List[Tensor] = []
        self._aux: Optional[Tensor] = None
        self._last_conf: Optional[Tensor] = None

    def reset_parameters(self):
        for m in self.children():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif isinstance(m, nn.ModuleList):
                for mm in m:
                    mm.reset_parameters()

    @property
    def last_conf_loss(self) -> Optional[float]:
        """The conformation loss of the last training forward (read from the device when asked,
        not in every forward)."""
        lam = self.config.lam
        return None if self._last_conf is None or not lam else float(self._last_conf) / lam

    # ------------------------------------------------------------------ helpers
    def conformation_target(self, data) -> Optional[Tensor]:
        """The supervision of the learned conformations (``None`` in the ChemNet-only modes)."""
        if not self.learned:
            return None
        name = "rdkit_pos" if self.config.mode == "physchem-rdkit" else "pos"
        t = getattr(data, name, None)
        return t

    def _fixed_conformation(self, data) -> Optional[Tensor]:
        mode = self.config.mode
        if mode == "chemnet-rdkit":
            return self._need(data, "rdkit_pos")
        if mode == "chemnet-real":
            return self._need(data, "pos")
        return None

    @staticmethod
    def _need(data, name: str) -> Tensor:
        t = getattr(data, name, None)
        if t is None:
            raise ValueError(f"PhysChem: the batch has no {name!r}; PhysChem needs the featurized graphs of "
                             f"pamnet_fast.data.molgraphs (datasets qm9-physchem, esol, freesolv, lipop)")
        return t

    # ------------------------------------------------------------------ forward
    def forward(self, data) -> Tensor:
        c = self.config
        x = self._need(data, "x")
        if x.shape[1] != c.atom_dim:
            raise ValueError(f"PhysChem: data.x has {x.shape[1]} features, the model expects {c.atom_dim}")
        edge_attr = self._need(data, "edge_attr")
        mass = self._need(data, "mass").to(x.dtype)
        rank = getattr(data, "rank", None)
        if rank is None:
            rank = torch.arange(x.shape[0], device=x.device)
        num_graphs = getattr(data, "num_graphs", None)
        exact_pairs = (self.learned and self.physnet.pair_forces == "graph"
                       and self.physnet.pair_cutoff is None)
        g = mol_batch(data.edge_index, x.shape[0], getattr(data, "batch", None), mass,
                      num_graphs if isinstance(num_graphs, int) and hasattr(data, "batch") else None,
                      pairs=exact_pairs)
        hv, he, p, q = self.initializer(x, edge_attr, rank, g)
        fixed = self._fixed_conformation(data)
        traj: List[Tensor] = [q] if self.learned else []
        states = []
        for b in range(c.num_blocks):
            if c.mode != "physnet":
                new_hv, new_he = self.chemnet[b](hv, he, q if self.learned else fixed, g)
            if self.learned:
                p, q = self.physnet(hv, he, p, q, g, c.steps, traj)
            if c.mode != "physnet":
                hv, he = new_hv, new_he
            states.append(hv)
        self.conformations = traj
        out = self.readout(torch.cat(states, 1), g.batch, g.num_graphs, g.counts)
        self._aux = None
        if self.training and self.learned:
            self._aux = c.lam * self.conformation_loss(traj, data, g)
            self._last_conf = self._aux.detach()
        return out

    def conformation_loss(self, traj: List[Tensor], data, g: Optional[MolBatch] = None) -> Tensor:
        """The weighted Conn-k (or Kabsch-RMSD) loss of the conformations ``traj`` against the target."""
        c = self.config
        target = self.conformation_target(data)
        if target is None:
            raise ValueError(f"PhysChem mode {c.mode!r}: the batch has no conformation target")
        if g is None:
            g = mol_batch(data.edge_index, target.shape[0], getattr(data, "batch", None),
                          target.new_ones(target.shape[0]))
        sizes = dict(counts=g.counts, max_atoms=g.max_atoms)  # from the graph's read: no bincount
        if c.conf_loss == "kabsch":
            return sum(w * kabsch_rmsd(x, target, g.batch, g.num_graphs, slot=g.atom_slot, **sizes).mean()
                       for w, x in zip(step_weights(len(traj), c.conn_weight), traj))
        pairs: ConnPairs = conn_pairs(data.edge_index, g.batch, g.num_graphs, c.conn_k, **sizes)
        return hierarchical_conn_loss(traj, target, pairs, c.conn_weight)

    def auxiliary_loss(self) -> Optional[Tensor]:
        """:math:`\\lambda L_{\\text{conf}}` of the last training forward (then cleared); the trainer
        adds it to the property loss."""
        aux, self._aux = self._aux, None
        return aux

    @torch.no_grad()
    def predict_conformations(self, data) -> Tensor:
        """The final learned conformation ``[N, 3]`` of a batch (eval mode)."""
        was = self.training
        self.eval()
        try:
            self.forward(data)
        finally:
            self.train(was)
        if not self.conformations:
            raise ValueError(f"PhysChem mode {self.config.mode!r} does not learn conformations")
        return self.conformations[-1]
