r"""PhysChem's initializer: atom/bond embeddings and the initial momenta and positions.

.. math::
    h_v^{(0)} = \tanh(W_v x_v + b_v), \qquad h_e^{(0)} = \tanh(W_e x_e + b_e), \qquad
    s_e = \sigma(w_s^\top h_e^{(0)} + b_s)

    \tilde A_{ij} = s_{ij} / \textstyle\sum_k s_{ik} \ \text{(bond-strength adjacency, row-normalized,
    no self loops)}, \qquad g^{(l+1)} = \tilde A\, W_l g^{(l)}

    [p_v, q_v] = W_o\, \mathrm{LSTM}\big([h_v^{(0)} \| g_v^{(1)} \| g_v^{(2)}]\ \text{over each
    molecule's atoms}\big)

The LSTM walks the atoms in RDKit's canonical rank order (``data.rank``) rather than the input order,
which makes the model invariant to atom renumbering (the authors walk the input order).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ... import ops
from .graph import MolBatch, segment_sum


class Initializer(nn.Module):
    """Embeddings ``hv [N, hv_dim]``, ``he [E, he_dim]`` and initial ``p, q [N, 3]``."""

    def __init__(self, atom_dim: int, bond_dim: int, hv_dim: int, he_dim: int, gcn_hidden: int,
                 gcn_out: int, lstm_layers: int, lstm_out: int, pq_dim: int = 3):
        super().__init__()
        self.pq_dim = pq_dim
        self.atom_embed = nn.Linear(atom_dim, hv_dim)
        self.bond_embed = nn.Linear(bond_dim, he_dim)
        self.bond_strength = nn.Linear(he_dim, 1)
        self.gcn = nn.ModuleList([nn.Linear(hv_dim, gcn_hidden), nn.Linear(gcn_hidden, gcn_out)])
        self.act = nn.LeakyReLU()
        self.lstm = nn.LSTM(hv_dim + gcn_hidden + gcn_out, lstm_out, lstm_layers)
        self.pq = nn.Linear(lstm_out, 2 * pq_dim)
        self.reset_parameters()

    def reset_parameters(self):
        for m in (self.atom_embed, self.bond_embed, self.bond_strength, *self.gcn, self.lstm, self.pq):
            m.reset_parameters()

    def embed(self, x: Tensor, edge_attr: Tensor):
        return torch.tanh(self.atom_embed(x)), torch.tanh(self.bond_embed(edge_attr))

    def forward(self, x: Tensor, edge_attr: Tensor, rank: Tensor, g: MolBatch):
        """x ``[N, atom_dim]``, edge_attr ``[E, bond_dim]``, rank ``[N]`` -> hv, he, p, q."""
        hv, he = self.embed(x, edge_attr)
        s = torch.sigmoid(self.bond_strength(he))                                   # [E, 1]
        deg = segment_sum(s, g.dst, x.shape[0])                                      # [N, 1]
        w = s / deg.clamp(min=1e-12)[g.dst]
        feats = [hv]
        h = hv
        for k, lin in enumerate(self.gcn):
            t = lin(h)
            h = ops.segment_gather_mul(t, g.src, w.expand(-1, t.shape[1]), g.ptr)  # A~ (W h)
            if k < len(self.gcn) - 1:
                h = self.act(h)
            feats.append(h)
        seq = torch.cat(feats, 1)
        pq = self.pq(self._lstm(seq, rank, g))
        return hv, he, pq[:, :self.pq_dim], pq[:, self.pq_dim:]

    def _lstm(self, seq: Tensor, rank: Tensor, g: MolBatch) -> Tensor:
        """LSTM over the atoms of each molecule in canonical rank order; output in input order.
        Sync-free: the lengths come from ``g.counts_cpu``, the molecules are laid out as the columns
        packing wants (longest first), so no index crosses between host and device, and the initial
        states are given (the LSTM would otherwise read the packed batch size to make them)."""
        n = seq.shape[0]
        # atoms by molecule, then rank (two stable sorts: no maximum rank to read)
        order = torch.sort(rank, stable=True).indices
        order = order.index_select(0, torch.sort(g.batch.index_select(0, order), stable=True).indices)
        by_length = torch.sort(g.counts, descending=True, stable=True).indices
        column = torch.empty_like(by_length).scatter_(0, by_length, torch.arange(
            g.num_graphs, device=seq.device)).index_select(0, g.batch)      # column of each atom
        padded = seq.new_zeros(g.max_atoms, g.num_graphs, seq.shape[1])
        padded[g.atom_slot, column] = seq[order]
        lengths = torch.tensor(sorted(g.counts_cpu, reverse=True), dtype=torch.long)  # on the host
        packed = pack_padded_sequence(padded, lengths, enforce_sorted=True)
        h0 = seq.new_zeros(self.lstm.num_layers, g.num_graphs, self.lstm.hidden_size)
        out, _ = self.lstm(packed, (h0, h0))
        out, _ = pad_packed_sequence(out, total_length=g.max_atoms)
        res = out.new_empty(n, out.shape[2])
        res[order] = out[g.atom_slot, column]
        return res
