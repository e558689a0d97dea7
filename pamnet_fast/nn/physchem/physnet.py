r"""PhysNet: a learned molecular dynamics that moves the atoms from ChemNet's atom and bond states.

Newtonian engine (the paper's and the authors' default), with :math:`v = \sigma(h_v)`,
:math:`e = \sigma(h_e)` and :math:`\hat u = u / (\|u\| + 10^{-6})`:

.. math::
    F_i = \sum_{j \to i \in \text{bonds}} \tanh\tanh\big(w_2^\top \mathrm{LReLU}(W_1 [v_i \| e_{ji} \| v_j])
          + b_2\big)\, \widehat{q_i - q_j}
        + \sum_{j \ne i,\ \text{same molecule}} \tanh\big((d_{ij}^{-2} - d_{ij}^{-1})\, m_i m_j\big)\,
          \widehat{q_i - q_j},
    \qquad d_{ij} = \|\mathrm{softplus}(W_r (q_i - q_j) + b_r)\|

    p \leftarrow p + \tau F(q), \qquad q \leftarrow q + \tau\, p / m \quad \text{(both from the old
    state, as the authors do; } \tau = 0.25)

Forces on atoms without bonds are detached (as in the authors' code). Hamiltonian engine
(HamNet-style): energies :math:`U = \sum_{\text{bonds}} k_{ij} (\|q_i - q_j\| - r_{ij})^2 / 2 +
\sum_{i \ne j} m_i m_j (d_{ij}^{-2} - d_{ij}^{-1}) / 2` with :math:`k, r = \mathrm{softplus}(\mathrm{MLP}
[v_i \| e_{ji} \| v_j])`, forces :math:`F = -\partial U / \partial q` by autograd, momenta damped by
``dissipation``.

Pair terms: ``pair_forces="graph"`` evaluates them on a pair list (all pairs of each molecule, exact,
or the pairs within ``pair_cutoff`` from :func:`pamnet_fast.ops.radius_graph`); ``"dense"`` on
per-molecule ``[N_max, N_max]`` blocks (the authors build one ``[N, N]`` matrix for the whole batch).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import ops
from .graph import MolBatch, all_pairs, segment_sum

EPS = 1e-6


def unit(u: Tensor) -> Tensor:
    return u / (u.norm(dim=-1, keepdim=True) + EPS)


class PhysNet(nn.Module):
    """One shared engine; :meth:`forward` runs ``steps`` updates of ``(p, q)`` ``[N, 3]``."""

    def __init__(self, hv_dim: int, he_dim: int, pq_dim: int = 3, hidden: int = 32, tau: float = 0.25,
                 dynamics: str = "newton", dissipation: float = 0.0, pair_forces: str = "graph",
                 pair_cutoff: Optional[float] = None):
        super().__init__()
        self.tau, self.dynamics, self.dissipation = tau, dynamics, dissipation
        self.pair_forces, self.pair_cutoff = pair_forces, pair_cutoff
        self.bond1 = nn.Linear(2 * hv_dim + he_dim, hidden, bias=(dynamics != "newton"))
        self.bond2 = nn.Linear(hidden, 1 if dynamics == "newton" else 2)
        self.pair = nn.Linear(pq_dim, hidden)
        self.reset_parameters()

    def reset_parameters(self):
        for m in (self.bond1, self.bond2, self.pair):
            m.reset_parameters()

    # ------------------------------------------------------------------ pair lists
    def pairs(self, q: Tensor, g: MolBatch):
        """(i, j) of the pair terms (target i, source j)."""
        if self.pair_cutoff is None:
            return g.pairs if g.pairs is not None else all_pairs(g)
        ei = ops.radius_graph(q.detach(), float(self.pair_cutoff), g.batch)
        return ei[1], ei[0]

    def _gen_dist(self, delta: Tensor) -> Tensor:
        return F.softplus(self.pair(delta)).norm(dim=-1)

    def pair_force(self, q: Tensor, g: MolBatch, pairs=None) -> Tensor:
        m = g.mass
        if self.pair_forces == "dense":
            # [G, n, n] blocks, n = g.max_atoms (read with the graph): no size to read here
            slot, n = g.atom_slot, g.max_atoms
            qd = q.new_zeros(g.num_graphs, n, q.shape[1])
            qd[g.batch, slot] = q
            md = m.new_zeros(g.num_graphs, n)
            md[g.batch, slot] = m
            mask = torch.arange(n, device=q.device) < g.counts[:, None]              # [G, n]
            delta = qd[:, :, None] - qd[:, None]                                   # [G, n, n, 3]
            d = self._gen_dist(delta)
            eye = torch.eye(n, dtype=torch.bool, device=q.device)
            valid = mask[:, :, None] & mask[:, None] & ~eye
            mm = md[:, :, None] * md[:, None]
            val = torch.tanh(torch.where(valid, (d ** -2 - d ** -1) * mm, torch.zeros_like(d)))
            return (unit(delta) * val[..., None]).sum(2)[g.batch, slot]
        i, j = pairs if pairs is not None else self.pairs(q, g)
        delta = q[i] - q[j]
        d = self._gen_dist(delta)
        val = torch.tanh((d ** -2 - d ** -1) * m[i] * m[j])
        return segment_sum(unit(delta) * val[:, None], i, q.shape[0])

    # ------------------------------------------------------------------ engines
    def bond_terms(self, hv: Tensor, he: Tensor, g: MolBatch) -> Tensor:
        v, e = torch.sigmoid(hv), torch.sigmoid(he)
        return self.bond2(F.leaky_relu(self.bond1(torch.cat([v[g.dst], e, v[g.src]], 1))))

    def newton_force(self, bond: Tensor, q: Tensor, g: MolBatch, pairs=None) -> Tensor:
        mag = torch.tanh(torch.tanh(bond))                                         # [E, 1]
        f = segment_sum(unit(q[g.dst] - q[g.src]) * mag, g.dst, q.shape[0])
        f = f + self.pair_force(q, g, pairs)
        return torch.where(g.bonded[:, None], f, f.detach())

    def energy(self, bond: Tensor, q: Tensor, g: MolBatch, pairs=None) -> Tensor:
        k, r = F.softplus(bond).unbind(1)
        length = (q[g.dst] - q[g.src]).norm(dim=-1)
        u = 0.25 * (k * (length - r) ** 2).sum()                       # each bond is listed twice
        i, j = pairs if pairs is not None else self.pairs(q, g)
        d = self._gen_dist(q[i] - q[j])
        return u + 0.5 * ((d ** -2 - d ** -1) * g.mass[i] * g.mass[j]).sum()

    def forward(self, hv: Tensor, he: Tensor, p: Tensor, q: Tensor, g: MolBatch, steps: int,
                trajectory: Optional[list] = None):
        """Run ``steps`` updates; the conformation after each one is appended to ``trajectory``."""
        bond = self.bond_terms(hv, he, g)
        pairs = self.pairs(q, g) if (self.pair_cutoff is None and self.pair_forces == "graph") else None
        inv_m = 1.0 / g.mass[:, None]
        outer_grad = torch.is_grad_enabled()  # build the graph of the forces only when training
        for _ in range(steps):
            if self.dynamics == "newton":
                force = self.newton_force(bond, q, g, pairs)
            else:
                with torch.enable_grad():
                    qg = q if q.requires_grad else q.detach().requires_grad_(True)
                    u = self.energy(bond, qg, g, pairs)
                    force = -torch.autograd.grad(u, qg, create_graph=outer_grad)[0]
                force = force - self.dissipation * p
            p, q = p + self.tau * force, q + self.tau * p * inv_m
            if trajectory is not None:
                trajectory.append(q)
        return p, q
