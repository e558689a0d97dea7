r"""Local plex layers: PAMNet's (one-hop and two-hop angles) and PAMNet-s's (one-hop angles only).

The layers trust their index inputs (built valid, and the model inputs checked, by
:func:`pamnet_fast.nn.graphs.build_graphs`): they call the ops with ``check_values=False``, so a
forward reads nothing back from the device."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from .. import ops
from ..ops import Triplets
from .dense import MLP, Linear
from .global_mp import PlexLayer, split_message_weight
from .graphs import PlexTransposes
from .recompute import maybe_checkpoint


def edge_rows(t: Tensor, edge_row: Optional[Tensor]) -> Tensor:
    """Per-edge ``[E, ...]`` from per-row ``t`` (rows shared by an edge and its reverse), or ``t``."""
    return t if edge_row is None else t.index_select(0, edge_row)


def _message_terms(lin: nn.Linear, h: Tensor, edge_attr: Tensor, dim: int, edge_row: Optional[Tensor],
                   transposes: Optional[PlexTransposes]):
    r"""The inputs of :math:`\mathrm{SiLU}(W [h_i \| h_j \| e_{ji}] + b)` for the message ops, without
    the ``[E, 3F]`` concat: node projections ``p = W_i h + b``, ``q = W_j h`` ``[N, F]``, the edge
    term ``r = W_e e`` (rows of ``edge_attr``), and the backward's transposes as keyword arguments."""
    w_i, w_j, w_e = split_message_weight(lin, dim)
    t_src, t_row = (None, None) if transposes is None else transposes[:2]
    return (ops.linear(h, w_i, lin.bias), ops.linear(h, w_j), ops.linear(edge_attr, w_e),
            dict(check_values=False, src_transpose=t_src, row_transpose=None if edge_row is None else t_row))


def _gated_edge_mlp(lin: nn.Linear, h: Tensor, edge_attr: Tensor, gate: Tensor, src: Tensor, ptr: Tensor,
                    dim: int, edge_row: Optional[Tensor] = None,
                    transposes: Optional[PlexTransposes] = None) -> Tensor:
    r"""Per-edge ``SiLU(W [h_i || h_j || e_ij] + b) * gate_ij`` ``[E, F]`` by
    :func:`pamnet_fast.ops.edge_message` (one kernel, no gathered copies); ``edge_attr`` and ``gate``
    have one row per edge, or per ``edge_row`` entry."""
    p, q, r, kw = _message_terms(lin, h, edge_attr, dim, edge_row, transposes)
    return ops.edge_message(p, q, r, gate, ptr, src, edge_row, **kw)


def _node_sum(lin_ji: nn.Linear, h: Tensor, edge_attr: Tensor, gate: Tensor, m_other: Tensor,
              src: Tensor, ptr: Tensor, edge_ids: Tensor, edge_row: Optional[Tensor],
              dim: int, transposes: Optional[PlexTransposes] = None) -> Tensor:
    r""":math:`\sum_{j} g_{ji} \odot (\mathrm{SiLU}(W[h_i\|h_j\|e_{ji}] + b) + m^{other}_{ji})`, fused;
    ``edge_attr`` and ``gate`` have one row per edge (``edge_ids = arange(E)``) or per ``edge_row``
    entry."""
    rows = edge_ids if edge_row is None else edge_row
    p, q, r, kw = _message_terms(lin_ji, h, edge_attr, dim, edge_row, transposes)
    out = ops.fused_edge_message(p, q, r, gate, ptr, src, edge_row, **kw)
    return out + ops.segment_gather_mul(gate, rows, m_other, ptr, check_values=False,
                                        src_transpose=None if transposes is None else transposes[1])


def propagate(layer: PlexLayer, x: Tensor, rbf: Tensor, edge_index: Tensor, ptr: Tensor,
              edge_ids: Tensor, edge_row: Optional[Tensor], angle_sum: Callable[[Tensor], Tensor],
              transposes: Optional[PlexTransposes] = None, one_block: bool = False):
    """One local layer given ``angle_sum(m_nb) -> [E, F]``, the triplet part of :math:`m_{ji}` (computed
    at once, or block by block over the receiving edges by :mod:`pamnet_fast.nn.stream`).

    In training the neighbour messages are recomputed in backward; ``one_block``: together with
    ``angle_sum`` (which then must not checkpoint itself), as one block, so neither the ``[E, F]``
    messages nor the ``[T, F]`` angle terms are kept, and one block costs less host time than two."""
    src = edge_index[0]
    h = layer.mlp_x1(x)
    if one_block:
        def block(h, rbf):
            return angle_sum(layer._neighbour_message(h, rbf, src, ptr, edge_row, transposes))
        m_other = maybe_checkpoint(layer, block, h, rbf)
    else:
        m_nb = maybe_checkpoint(layer, layer._neighbour_message, h, rbf, src, ptr, edge_row, transposes)
        m_other = angle_sum(m_nb)
    gate = layer.lin_rbf_out(rbf)
    h = h + _node_sum(layer.mlp_m_ji.linear(0), h, rbf, gate, m_other, src, ptr, edge_ids, edge_row,
                      layer.dim, transposes)
    return layer.update_and_output(h, x)


class LocalMessagePassing(PlexLayer):
    r"""Local plex layer of PAMNet: edge messages updated from two-hop and one-hop angle terms.

    .. math::
        h_i &= \phi_{x1}(x_i), \qquad u = [h_i \,\|\, h_j \,\|\, e_{ji}] \\
        m_{ji} &= \phi_{ji}(u) + \sum_{k \in \mathcal N(j) \setminus \{i\}} \phi_{kj}(u_{kj}) \odot W_{rbf}
                 e_{kj} \odot \phi_{sbf}(a^{(2)}_{kj,ji})
                 + \sum_{j' \in \mathcal N(i) \setminus \{j\}} \phi_{kj}(u_{j'i}) \odot W_{rbf} e_{j'i}
                 \odot \phi_{sbf}(a^{(1)}_{j'i,ji}) \\
        x'_i &= \mathrm{Update}\Big(h_i + \sum_{j \in \mathcal N_l(i)} W_{rbf,out}\, e_{ji} \odot m_{ji},\ x_i\Big)

    :math:`e` is the shared projection of the local radial basis, :math:`a^{(2)}, a^{(1)}` the shared
    projections of the two-hop and one-hop spherical bases (their distance is that of the sending
    edge). ``reference_compat`` graphs also pair each edge with itself in the one-hop sum. The two
    triplet sums are :func:`pamnet_fast.ops.segment_gather_mul` over the triplet CSR of the neighbour
    messages :math:`\phi_{kj}(u) \odot W_{rbf} e` (one :func:`~pamnet_fast.ops.edge_message`), the
    edge -> node sum is :func:`~pamnet_fast.ops.fused_edge_message` (the :math:`\phi_{ji}` part) plus a
    ``segment_gather_mul`` (the angle part).

    Shapes: ``x [N, F]``, ``rbf [E, F]``, ``sbf2 [T2, F]``, ``sbf1 [T1, F]``, ``edge_index [2, E]``
    target-sorted with ``ptr [N + 1]``, ``trip`` from :func:`pamnet_fast.ops.triplets`, ``edge_ids``
    ``= arange(E)``; or ``rbf [R, F]`` with ``edge_row [E]`` (each bond and its reverse share a row:
    the four edge projections then cost R = E/2 rows). Returns ``(x' [N, F], out [N, out_dim],
    score [N, 1], z [N, F])``.
    """

    def __init__(self, dim: int, out_dim: int = 1):
        super().__init__(dim, out_dim)
        self.mlp_m_ji = MLP([3 * dim, dim])
        self.mlp_m_kj = MLP([3 * dim, dim])
        self.mlp_sbf = MLP([dim, dim, dim])
        self.lin_rbf = Linear(dim, dim, bias=False)
        self.lin_rbf_out = Linear(dim, dim, bias=False)
        self.reset_parameters()

    def _neighbour_message(self, h: Tensor, rbf: Tensor, src: Tensor, ptr: Tensor,
                           edge_row: Optional[Tensor] = None,
                           transposes: Optional[PlexTransposes] = None) -> Tensor:
        return _gated_edge_mlp(self.mlp_m_kj.linear(0), h, rbf, self.lin_rbf(rbf), src, ptr, self.dim,
                               edge_row, transposes)

    def forward(self, x: Tensor, rbf: Tensor, sbf2: Tensor, sbf1: Tensor, edge_index: Tensor,
                ptr: Tensor, trip: Triplets, edge_ids: Tensor, edge_row: Optional[Tensor] = None,
                transposes: Optional[PlexTransposes] = None):
        """``transposes`` (:class:`~pamnet_fast.nn.graphs.PlexTransposes`, for the backward): their
        ``angles`` are not used here (two lists)."""
        def angle_sum(m_nb):
            return self.angle_sum(m_nb, sbf2, trip.two_hop_kj, trip.two_hop_ptr, sbf1, trip.one_hop_j2i,
                                  trip.one_hop_ptr, recompute=False)
        return propagate(self, x, rbf, edge_index, ptr, edge_ids, edge_row, angle_sum, transposes,
                         one_block=True)

    def forward_merged(self, x: Tensor, rbf: Tensor, sbf: Tensor, angle_src: Tensor, angle_ptr: Tensor,
                       edge_index: Tensor, ptr: Tensor, edge_ids: Tensor, edge_row: Optional[Tensor] = None,
                       transposes: Optional[PlexTransposes] = None):
        """:meth:`forward` with both triplet lists merged per receiving edge
        (:class:`~pamnet_fast.nn.graphs.AngleLists`): ``sbf [T2 + T1, F]`` in that order. The two
        angle sums are then one MLP pass and one gather-multiply-scatter (same sums, other order)."""
        def angle_sum(m_nb):
            return ops.segment_gather_mul(m_nb, angle_src, self.mlp_sbf(sbf), angle_ptr, check_values=False,
                                          src_transpose=None if transposes is None else transposes.angles)
        return propagate(self, x, rbf, edge_index, ptr, edge_ids, edge_row, angle_sum, transposes,
                         one_block=True)

    def angle_sum(self, m_nb: Tensor, sbf2: Tensor, two_hop_kj: Tensor, two_hop_ptr: Tensor,
                  sbf1: Tensor, one_hop_j2i: Tensor, one_hop_ptr: Tensor, recompute: bool = True
                  ) -> Tensor:
        """The two triplet sums of :math:`m_{ji}` for the receiving edges of the pointers ``[E' + 1]``
        (all edges, or a block of them with its triplets: the streamed path). ``recompute``: in
        training, recompute the angle MLP in backward (``False`` inside a recomputed block)."""
        a2 = maybe_checkpoint(self, self.mlp_sbf, sbf2) if recompute else self.mlp_sbf(sbf2)
        a1 = maybe_checkpoint(self, self.mlp_sbf, sbf1) if recompute else self.mlp_sbf(sbf1)
        m_other = ops.segment_gather_mul(m_nb, two_hop_kj, a2, two_hop_ptr, check_values=False)
        return m_other + ops.segment_gather_mul(m_nb, one_hop_j2i, a1, one_hop_ptr, check_values=False)


class LocalMessagePassingS(PlexLayer):
    r"""Local plex layer of PAMNet-s: like :class:`LocalMessagePassing` with the one-hop angle term only.

    .. math::
        m_{ji} = \phi_{ji}(u) + \sum_{j' \in \mathcal N(i) \setminus \{j\}} \phi_{jj}(u_{j'i}) \odot
                 W_{rbf} e_{j'i} \odot \phi_{sbf}(a_{j'i,ji}), \qquad
        x'_i = \mathrm{Update}\Big(h_i + \sum_j W_{rbf,out}\, e_{ji} \odot m_{ji},\ x_i\Big)

    Shapes as in :class:`LocalMessagePassing` with ``sbf [T1, F]``.
    """

    def __init__(self, dim: int, out_dim: int = 1):
        super().__init__(dim, out_dim)
        self.mlp_m_ji = MLP([3 * dim, dim])
        self.mlp_m_jj = MLP([3 * dim, dim])
        self.mlp_sbf = MLP([dim, dim, dim])
        self.lin_rbf = Linear(dim, dim, bias=False)
        self.lin_rbf_out = Linear(dim, dim, bias=False)
        self.reset_parameters()

    def _neighbour_message(self, h: Tensor, rbf: Tensor, src: Tensor, ptr: Tensor,
                           edge_row: Optional[Tensor] = None,
                           transposes: Optional[PlexTransposes] = None) -> Tensor:
        return _gated_edge_mlp(self.mlp_m_jj.linear(0), h, rbf, self.lin_rbf(rbf), src, ptr, self.dim,
                               edge_row, transposes)

    def forward(self, x: Tensor, rbf: Tensor, sbf: Tensor, edge_index: Tensor, ptr: Tensor,
                trip: Triplets, edge_ids: Tensor, edge_row: Optional[Tensor] = None,
                transposes: Optional[PlexTransposes] = None):
        def angle_sum(m_nb):
            return self.angle_sum(m_nb, sbf, trip.one_hop_j2i, trip.one_hop_ptr,
                                  None if transposes is None else transposes.angles, recompute=False)
        return propagate(self, x, rbf, edge_index, ptr, edge_ids, edge_row, angle_sum, transposes,
                         one_block=True)

    def angle_sum(self, m_nb: Tensor, sbf: Tensor, one_hop_j2i: Tensor, one_hop_ptr: Tensor,
                  angles_transpose: Optional[Tensor] = None, recompute: bool = True) -> Tensor:
        """The one-hop triplet sum of :math:`m_{ji}` for the receiving edges of ``one_hop_ptr``
        (``recompute`` as in :meth:`LocalMessagePassing.angle_sum`)."""
        a1 = maybe_checkpoint(self, self.mlp_sbf, sbf) if recompute else self.mlp_sbf(sbf)
        return ops.segment_gather_mul(m_nb, one_hop_j2i, a1, one_hop_ptr, check_values=False,
                                      src_transpose=angles_transpose)
