r"""Dense twin of :class:`~pamnet_fast.nn.physchem.PhysChem` in the authors' formulation (same weights).

The authors' code works on dense batch-global matrices: vertex-edge incidences ``[N, E]``, the
bond-strength adjacency ``[N, N]``, the molecule-vertex mask ``[G, N]`` and an all-pairs ``[N, N]``
force matrix masked to pairs of the same molecule; ChemNet compares every pair of bonds through an
``[E, E]`` mask of bonds sharing an atom. This module computes the same model that way, so it is
(1) the plain specification the tests compare :class:`PhysChem` against and (2) the baseline of the
benchmark. The triplet max needs a feature vector per bond pair; a batch-global ``[E, E, F]`` tensor
is out of reach for drug-like batches (Lipophilicity, 32 molecules: ~4 GB), so it is evaluated on
per-molecule ``[E_max, E_max]`` blocks - still every bond pair of a molecule, as the authors' masks.
Newtonian dynamics only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import mol_batch
from .model import PhysChem

EPS = 1e-6


def _unit(u: Tensor) -> Tensor:
    return u / (u.norm(dim=-1, keepdim=True) + EPS)


def _dense_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Row softmax of ``scores [R, C]`` over the ``mask``-ed columns (rows without any give zeros)."""
    s = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(s, dim=1)
    return torch.nan_to_num(out, nan=0.0)


class DensePhysChem:
    """``DensePhysChem(model)(data)``: the forward of ``model`` (a :class:`PhysChem`) computed densely.

    Sets ``self.conformations`` like the model; :meth:`conformation_loss` is the model's (its inputs
    are the same).
    """

    def __init__(self, model: PhysChem):
        if model.learned and model.config.dynamics != "newton":
            raise ValueError("DensePhysChem implements the Newtonian dynamics only")
        self.m = model
        self.conformations = []

    def __call__(self, data) -> Tensor:
        m, c = self.m, self.m.config
        x, ea = data.x, data.edge_attr
        mass = data.mass.to(x.dtype)
        n = x.shape[0]
        src, dst = data.edge_index[0].long(), data.edge_index[1].long()
        batch = data.batch.long()
        num_graphs = int(batch.max()) + 1
        S = F.one_hot(src, n).to(x.dtype)                       # [E, N] edge -> its source
        T = F.one_hot(dst, n).to(x.dtype)                       # [E, N] edge -> its target
        MV = F.one_hot(batch, num_graphs).to(x.dtype).t()       # [G, N] molecule-vertex mask
        rank = getattr(data, "rank", None)
        rank = torch.arange(n) if rank is None else rank
        # ---- initializer
        ini = m.initializer
        hv, he = ini.embed(x, ea)
        s = torch.sigmoid(ini.bond_strength(he))[:, 0]
        A = T.t() @ (s[:, None] * S)                            # [N, N], A[i, j] = s(j -> i)
        A = A / A.sum(1, keepdim=True).clamp(min=1e-12)
        feats, h = [hv], hv
        for k, lin in enumerate(ini.gcn):
            h = A @ lin(h)
            if k < len(ini.gcn) - 1:
                h = F.leaky_relu(h)
            feats.append(h)
        g = mol_batch(data.edge_index, n, batch, mass)         # only for the LSTM's ordering
        pq = ini.pq(ini._lstm(torch.cat(feats, 1), rank, g))
        p, q = pq[:, :3], pq[:, 3:]
        # ---- blocks
        fixed = None
        if c.mode == "chemnet-rdkit":
            fixed = data.rdkit_pos
        elif c.mode == "chemnet-real":
            fixed = data.pos
        traj = [q] if m.learned else []
        states = []
        same_mol = (MV.t() @ MV) * (1 - torch.eye(n, dtype=x.dtype))   # [N, N] pairs of a molecule
        for b in range(c.num_blocks):
            if c.mode != "physnet":
                new_hv, new_he = hv, he
                for layer in m.chemnet[b].layers:
                    new_hv, new_he = self._chem_layer(layer, new_hv, new_he, q if m.learned else fixed,
                                                      S, T, src, dst, batch, num_graphs)
            if m.learned:
                for _ in range(c.steps):
                    f = self._force(m.physnet, hv, he, q, mass, S, T, same_mol)
                    p, q = p + c.tau * f, q + c.tau * p / mass[:, None]
                    traj.append(q)
            if c.mode != "physnet":
                hv, he = new_hv, new_he
            states.append(hv)
        self.conformations = traj
        return self._readout(m.readout, torch.cat(states, 1), MV)

    # ------------------------------------------------------------------ PhysNet (Newton)
    @staticmethod
    def _force(pn, hv, he, q, mass, S, T, same_mol):
        v, e = torch.sigmoid(hv), torch.sigmoid(he)
        u_e_v = torch.cat([T @ v, e, S @ v], 1)
        mag = torch.tanh(torch.tanh(pn.bond2(F.leaky_relu(pn.bond1(u_e_v)))))
        f_bond = T.t() @ (_unit(T @ q - S @ q) * mag)
        delta = q[:, None] - q[None]                                         # [N, N, 3]
        d = F.softplus(pn.pair(delta)).norm(dim=-1)
        val = torch.tanh((d ** -2 - d ** -1) * (mass[:, None] * mass[None]) * same_mol)
        f = f_bond + (_unit(delta) * val[..., None]).sum(1)
        bonded = T.sum(0) > 0
        return torch.where(bonded[:, None], f, f.detach())

    # ------------------------------------------------------------------ ChemNet
    @staticmethod
    def _chem_layer(layer, hv, he, x, S, T, src, dst, batch, num_graphs):
        E = S.shape[0]
        if x is None:  # ChemNet alone: zero geometric features
            rbf = hv.new_zeros(E, layer.rbf.centers.numel())
            u = hv.new_zeros(E, 3)
        else:
            u = S @ x - T @ x                                                # [E, 3], i -> j
            rbf = layer.rbf(u.norm(dim=-1))
        edge = layer.edge_term(torch.cat([T @ hv, S @ hv, he, rbf], 1))       # [E, mv]
        partner = layer.partner_term(torch.cat([he, rbf], 1))
        # per-molecule blocks of the [E, E] "share the atom" mask
        emol = batch[dst]
        counts = torch.bincount(emol, minlength=num_graphs)
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        slot = torch.arange(E) - starts[emol]
        k = int(counts.max())
        pad = (lambda t: t.new_zeros((num_graphs, k) + t.shape[1:]).index_put_((emol, slot), t))
        ed, pd, ud = pad(edge), pad(partner), pad(u)
        dd = pad(dst.to(torch.float64))
        valid = pad(torch.ones(E, dtype=torch.bool))
        share = (dd[:, :, None] == dd[:, None, :]) & valid[:, :, None] & valid[:, None, :]   # [G, k, k]
        if x is None:
            cos = hv.new_zeros(num_graphs, k, k)
        else:
            nrm = ud.norm(dim=-1)
            cos = (ud[:, :, None] * ud[:, None]).sum(-1) / (nrm[:, :, None] * nrm[:, None]).clamp(min=1e-6)
        psi = layer.angle(cos.clamp(-1, 1).reshape(-1))
        ang = layer.angle_term(psi if x is not None else psi * 0).reshape(num_graphs, k, k, -1)
        t = F.leaky_relu(ed[:, :, None] + pd[:, None] + ang)                 # [G, k, k, mv]
        t = t.masked_fill(~share[..., None], float("-inf"))
        mmsg = t.max(2).values[emol, slot]                                   # [E, mv]
        R = ((S @ T.t()) * (T @ S.t()))                                      # [E, E] reverse-bond matrix
        m_in = R @ mmsg
        score = layer.align(torch.cat([T @ hv, m_in], 1))[:, 0]              # [E]
        alpha = _dense_softmax(T.t() * score[None], T.t() > 0)              # [N, E]
        mu_v = F.elu(alpha @ layer.attend(m_in))
        hv = F.leaky_relu(layer.gru_v(mu_v, hv))
        if not layer.update_bonds:
            return hv, he
        mu_e = F.leaky_relu(layer.bond_msg(mmsg + m_in))
        return hv, F.leaky_relu(layer.gru_e(mu_e, he))

    # ------------------------------------------------------------------ readout
    @staticmethod
    def _readout(ro, hv, MV):
        hm = (MV / MV.sum(1, keepdim=True)) @ F.leaky_relu(ro.vertex2mol(hv))
        for align, attend, gru in zip(ro.align, ro.attend, ro.gru):
            hm_v = MV.t() @ hm                                               # [N, hm]
            score = align(torch.cat([hm_v, hv], 1))[:, 0]
            beta = _dense_softmax(MV * score[None], MV > 0)                  # [G, N]
            mu = F.elu(beta @ F.leaky_relu(attend(hv)))
            hm = F.leaky_relu(gru(mu, hm))
        return ro.head(hm)


def dense_conn_loss(conformations, target: Tensor, edge_index: Tensor, batch: Tensor, k: int = 3,
                    base: float = 1.6) -> Tensor:
    """The authors' ``hierarchical_adj3_loss``: batch-global ``[N, N]`` adjacency powers and distance
    matrices (equal to :func:`~pamnet_fast.nn.physchem.losses.hierarchical_conn_loss`)."""
    from .losses import step_weights
    n = target.shape[0]
    adj = torch.eye(n, dtype=target.dtype)
    adj[edge_index[1], edge_index[0]] = 1.0
    reach = torch.linalg.matrix_power(adj, k)
    c = (reach > 0).to(target.dtype) * (batch[:, None] == batch[None]).to(target.dtype)
    deg = c.sum(1)
    c = c / (deg[:, None].sqrt() * deg[None].sqrt())
    dt = torch.cdist(target, target)
    return sum(w * (((torch.cdist(x, x) - dt) ** 2) * c).sum() / n
               for w, x in zip(step_weights(len(conformations), base), conformations))
