r"""PAMNet and PAMNet-s (Zhang et al., Sci. Rep. 2023) on the fused ops.

A molecule is a two-plex graph: the *local* plex (chemical bonds, or a short radius) carries
angle-aware messages, the *global* plex (a longer radius, optionally kNN-capped) carries distance-only
messages. Layer :math:`t` runs the global then the local layer on the node embeddings; each layer emits
a node output and an attention score, fused over plexes by :class:`~.fusion.AttentionFusion` and
summed over layers, then pooled per graph.

Hot-path structure (per forward): graphs, triplets, angles and distances are computed once; the basis
functions and their projections (``mlp_rbf_g``, ``mlp_rbf_l``, ``mlp_sbf1/2``) once, shared by all
layers; message passing uses :func:`pamnet_fast.ops.fused_edge_message` and
:func:`pamnet_fast.ops.segment_gather_mul`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, replace
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import ops
from .basis import BesselBasis, SphericalBasis
from .fusion import AttentionFusion, readout
from .config_dict import config_from_dict
from .dense import MLP, Linear
from .global_mp import GlobalMessagePassing
# pair_rows, sort_edges: importable from here as before the graph module
from .graphs import (Graphs, InputCheck, build_graphs, merged_angle_lists, pair_rows,  # noqa: F401
                     sort_edges)
from .local_mp import LocalMessagePassing, LocalMessagePassingS


@dataclass
class PAMNetConfig:
    """Hyper-parameters of PAMNet / PAMNet-s. Presets: :meth:`qm9`, :meth:`rna`, :meth:`pdbbind`.

    ``local_graph``: ``"bonds"`` (``data.edge_index``) or ``"radius"`` (``cutoff_l``). ``global_graph``:
    ``"radius"`` (``cutoff_g``) or ``"knn"`` (``knn_k`` nearest within ``cutoff_g``). ``atom_types``:
    atomic numbers of the embedding rows (``z`` is mapped to rows); ``in_features``: use ``data.x``
    ``[N, in_features]`` through a bias-free Linear instead. ``target="mu"`` adds the equivariant
    dipole head (the model then outputs :math:`|\\mu|`). ``reference_compat``: reproduce the authors'
    code where it differs from the paper (see :mod:`pamnet_fast.nn.basis` and :func:`build_graphs`).
    ``local_plex=False``: the global plex alone (distance messages only, no angles; every fusion
    weight is 1) — the ablation that shows what the local plex and its angles add.
    ``activation_checkpointing``: what training recomputes in backward instead of keeping.
    ``"edges"`` (default): each local layer's per-edge and per-triplet block (neighbour messages,
    angle MLP, angle sum), the largest activations; ``True``: also every layer's node MLPs (least
    memory); ``False``: nothing (least time). Values and gradients are the same. At a QM9 batch of
    128 (``benchmarks/saved_activations.py``, ``benchmarks/host_overhead.py``, 2026-12-01): kept
    activations 502 / 246 / 762 MB (0.134 / 0.066 / 0.204x DimeNet++'s), host time of a tiny train
    step (the launch-bound regime of a GPU) 52.1 / 68.2 / 42.0 ms (DimeNet++ 53.5 ms), CPU train
    step at batch 128 (``benchmarks/test_models.py``) 693 / 745 / 602 ms (DimeNet++ 2,432 ms).
    Checkpoints load across the setting.
    """
    dim: int = 128
    n_layer: int = 6
    cutoff_l: float = 5.0
    cutoff_g: float = 5.0
    local_graph: str = "bonds"
    global_graph: str = "radius"
    knn_k: int = 50
    num_radial: int = 16
    num_spherical: int = 7
    num_spherical_radial: int = 6
    envelope_exponent: int = 5
    atom_types: Tuple[int, ...] = (1, 6, 7, 8, 9)
    in_features: Optional[int] = None
    out_dim: int = 1
    readout: str = "sum"
    target: Optional[str] = None
    dipole_charges: bool = True
    reference_compat: bool = False
    max_num_neighbors: Optional[int] = None
    local_plex: bool = True
    activation_checkpointing: Union[bool, str] = "edges"

    def to_dict(self) -> dict:
        """Plain-JSON form (for checkpoints); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["atom_types"] = list(self.atom_types)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PAMNetConfig":
        kw = dict(d)
        if "atom_types" in kw:
            kw["atom_types"] = tuple(kw["atom_types"])
        return config_from_dict(cls, kw)

    @classmethod
    def qm9(cls, **kw) -> "PAMNetConfig":
        """dim 128, 6 layers, local = bonds (basis scale 5 Å), global = 5 Å radius, sum readout."""
        return replace(cls(dim=128, n_layer=6, cutoff_l=5.0, cutoff_g=5.0, local_graph="bonds",
                           global_graph="radius", atom_types=(1, 6, 7, 8, 9), readout="sum"), **kw)

    @classmethod
    def rna(cls, knn: bool = True, **kw) -> "PAMNetConfig":
        """dim 16, 1 layer, local 2.6 Å, global 20 Å (kNN-50 capped unless ``knn=False``), mean readout.
        Embedding rows C, N, O, P, H; with ``reference_compat=True`` C, N, O only, as the authors'
        RNA model (their node labels 0/1/2), so their ``save/pamnet_rna.pt`` loads as published."""
        if kw.get("reference_compat") and "atom_types" not in kw:
            kw["atom_types"] = (6, 7, 8)
        return replace(cls(dim=16, n_layer=1, cutoff_l=2.6, cutoff_g=20.0, local_graph="radius",
                           global_graph="knn" if knn else "radius", knn_k=50,
                           atom_types=(6, 7, 8, 15, 1), readout="mean"), **kw)

    @classmethod
    def pdbbind(cls, **kw) -> "PAMNetConfig":
        """dim 128, 3 layers, local 2 Å, global 6 Å, 18 input features, sum readout."""
        return replace(cls(dim=128, n_layer=3, cutoff_l=2.0, cutoff_g=6.0, local_graph="radius",
                           global_graph="radius", in_features=18, readout="sum"), **kw)


class PAMNetState(NamedTuple):
    """Everything a head needs after the message passing."""
    node_out: Tensor      # [N, out_dim] fused node outputs (summed over layers)
    alpha: Tensor         # [T, N, 2] attention weights (global, local)
    z_g: List[Tensor]     # per layer [N, F]: output-head features of the global plex (empty after
                          # encode(keep_features=False))
    z_l: List[Tensor]     # per layer [N, F]: same, local plex
    rbf_g: Tensor         # [Eg, F] shared global edge embedding ([R, F], one row per pair, when
                          # graphs.edge_row_g is set)
    rbf_l: Tensor         # [El, F] shared local edge embedding ([Rl, F] with graphs.edge_row_l)
    graphs: Graphs
    pos: Tensor           # [N, 3]
    batch: Tensor         # [N]
    num_graphs: int


class _PAMNetBase(nn.Module):
    local_cls = LocalMessagePassing

    def __init__(self, config: Optional[PAMNetConfig] = None, **kw):
        super().__init__()
        cfg = replace(config or PAMNetConfig(), **kw)
        if not (isinstance(cfg.activation_checkpointing, bool) or cfg.activation_checkpointing == "edges"):
            raise ValueError(f"activation_checkpointing must be True, False or 'edges', got "
                             f"{cfg.activation_checkpointing!r}")
        self.config = cfg
        self.dim = d = cfg.dim
        compat = cfg.reference_compat
        if cfg.in_features:
            self.init_linear = Linear(cfg.in_features, d, bias=False)
        else:
            self.embeddings = nn.Parameter(torch.empty(len(cfg.atom_types), d))
            index = torch.full((max(cfg.atom_types) + 1,), -1, dtype=torch.long)
            index[torch.tensor(cfg.atom_types)] = torch.arange(len(cfg.atom_types))
            self.register_buffer("atom_index", index, persistent=False)
        self.rbf_g = BesselBasis(cfg.num_radial, cfg.cutoff_g, cfg.envelope_exponent, compat)
        self.mlp_rbf_g = MLP([cfg.num_radial, d])
        self.global_layer = nn.ModuleList([GlobalMessagePassing(d, cfg.out_dim) for _ in range(cfg.n_layer)])
        self.local_layer = nn.ModuleList()
        if cfg.local_plex:
            self.rbf_l = BesselBasis(cfg.num_radial, cfg.cutoff_l, cfg.envelope_exponent, compat)
            self.sbf = SphericalBasis(cfg.num_spherical, cfg.num_spherical_radial, cfg.cutoff_l,
                                      cfg.envelope_exponent, compat)
            self.mlp_rbf_l = MLP([cfg.num_radial, d])
            self._make_sbf_mlps(cfg.num_spherical * cfg.num_spherical_radial, d)
            self.local_layer.extend(self.local_cls(d, cfg.out_dim) for _ in range(cfg.n_layer))
        for layer in (*self.global_layer, *self.local_layer):
            layer.grad_checkpointing = cfg.activation_checkpointing
        self.fusion = AttentionFusion(0.2)
        self._max_memory: Optional[int] = None
        self._stream_block_items: Optional[int] = None
        self.dipole_head = None
        if cfg.target == "mu":
            if not cfg.local_plex:
                raise ValueError("the dipole head (target='mu') needs the local plex; local_plex=False "
                                 "is not supported with it")
            from .heads import DipoleHead
            self.dipole_head = DipoleHead(d, charges=cfg.dipole_charges)
        self.reset_parameters()

    def reset_parameters(self):
        """Linear layers: PyTorch defaults; embeddings U(-sqrt 3, sqrt 3); W glorot; freq n pi."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        if hasattr(self, "embeddings"):
            with torch.no_grad():
                self.embeddings.uniform_(-math.sqrt(3), math.sqrt(3))

    # -- inputs ---------------------------------------------------------------------------------
    def input_check(self, data) -> Optional[InputCheck]:
        """The check of ``data.z`` (atomic numbers with an embedding row) or of an integer ``data.x``
        (rows in range) as a device-side flag with its error (:class:`~.graphs.InputCheck`), or
        ``None`` (float features). :meth:`build_graphs` reads it with the graph sizes."""
        if self.config.in_features:
            return None
        z = getattr(data, "z", None)
        if z is not None:
            z = z.long()
            known = (z >= 0) & (z < self.atom_index.numel())
            rows = self.atom_index[z.clamp(0, self.atom_index.numel() - 1)]
            bad = ~known | (rows < 0)

            def fail():
                raise ValueError(f"atomic numbers {torch.unique(z[bad]).tolist()[:8]} have no embedding "
                                 f"row (atom_types={tuple(self.config.atom_types)})")
            return InputCheck(~bad.any(), fail)
        rows = data.x.view(-1).long()

        def fail_rows():
            raise ValueError(f"data.x holds embedding rows outside [0, {self.embeddings.size(0)})")
        return InputCheck(((rows >= 0) & (rows < self.embeddings.size(0))).all(), fail_rows)

    def check_inputs(self, data) -> None:
        """``ValueError`` naming the atomic numbers (``data.z``) without an embedding row, or the
        integer ``data.x`` rows out of range (one host read)."""
        check = self.input_check(data)
        if check is not None and not bool(check.ok):
            check.fail()

    def node_input(self, data) -> Tensor:
        """What the embedding reads, without checks: float ``data.x [N, in_features]``, or the
        embedding rows ``[N]`` of ``data.z`` (atomic numbers) or of an integer ``data.x``."""
        if self.config.in_features:
            return data.x
        z = getattr(data, "z", None)
        if z is not None:
            return self.atom_index.index_select(0, z.long())
        return data.x.view(-1).long()

    def embed_input(self, node_input: Tensor) -> Tensor:
        """Initial node embeddings ``[N, F]`` from :meth:`node_input`."""
        if self.config.in_features:
            return self.init_linear(node_input.to(self.init_linear.weight.dtype))
        return self.embeddings.index_select(0, node_input)

    def embed(self, data) -> Tensor:
        """Initial node embeddings ``[N, F]`` from ``data.z`` (atomic numbers), an integer ``data.x``
        (embedding rows) or float ``data.x [N, in_features]``, checked (:meth:`check_inputs`)."""
        self.check_inputs(data)
        return self.embed_input(self.node_input(data))

    def build_graphs(self, data) -> Graphs:
        """The plexes, triplets and batch vector of ``data`` (:func:`pamnet_fast.nn.graphs.build_graphs`),
        after checking the inputs (:meth:`check_inputs`). ``model(data, model.build_graphs(data))`` is
        ``model(data)``; the forward given the graphs makes no host synchronization (build them
        outside ``torch.compile`` or a CUDA graph, run the forward inside). One host read here (the
        input check together with a bond list's sizes), besides the neighbor-search ops' own."""
        check = self.input_check(data)
        batch = getattr(data, "batch", None)
        num_graphs = getattr(data, "num_graphs", None) if batch is not None else 1
        return build_graphs(self.config, data.pos, batch, getattr(data, "edge_index", None),
                            num_graphs=num_graphs if isinstance(num_graphs, int) else None,
                            checks=() if check is None else (check,),
                            merge_angles=self.local_cls is LocalMessagePassing,
                            local_plex=self.config.local_plex,
                            transposes=self.backward_transposes(data.pos))

    @staticmethod
    def backward_transposes(pos: Tensor) -> bool:
        """Whether :meth:`build_graphs` builds the transposed CSRs of the message ops' backward once
        per batch (:class:`~pamnet_fast.nn.graphs.PlexTransposes`): when a backward may follow
        (autograd records) on the GPU kernels, which would sort an index in each op's backward; the
        CPU kernels transpose on the fly (a counting sort) and ignore them."""
        return torch.is_grad_enabled() and pos.device.type != "cpu"

    # -- memory budget (streamed global plex, pamnet_fast.nn.stream) ----------------------------
    @property
    def max_memory(self) -> Optional[int]:
        """Memory budget in bytes of a forward (``None``: unstreamed, the default). Set it to bytes or
        a size such as ``"2GiB"``: the global plex and the triplet terms are then streamed in blocks
        sized to it (same outputs; memory grows with atoms, not edges). See :meth:`stream`."""
        return self._max_memory

    @max_memory.setter
    def max_memory(self, value):
        from .stream import check_streamable, parse_memory
        if value is not None:
            check_streamable(self)
        self._max_memory = None if value is None else parse_memory(value)

    @contextlib.contextmanager
    def stream(self, max_memory="2GiB", block_items: Optional[int] = None):
        """``with model.stream("2GiB"): model(data)`` runs the forward (and backward) under the budget.
        ``block_items`` caps the global edges and the triplets of one block further (tests, tuning)."""
        before = self._max_memory, self._stream_block_items
        self.max_memory = max_memory
        self._stream_block_items = block_items
        try:
            yield self
        finally:
            self._max_memory, self._stream_block_items = before

    # -- model --------------------------------------------------------------------------------
    def encode(self, data, graphs: Optional[Graphs] = None, keep_features: bool = True) -> PAMNetState:
        """Message passing and fusion; ``graphs`` may be passed in (e.g. precomputed).
        ``keep_features=False`` leaves ``z_g``/``z_l`` empty (they are 2T node-feature tensors, needed
        only by heads such as the dipole's; dropping them lowers peak memory). Under
        :attr:`max_memory` (and without ``graphs``) the global plex is streamed
        (:func:`pamnet_fast.nn.stream.streamed_encode`)."""
        max_memory = getattr(self, "_max_memory", None)  # modules pickled before it existed
        if max_memory is not None and graphs is None:
            from .stream import streamed_encode
            return streamed_encode(self, data, max_memory, keep_features)
        if graphs is None:
            graphs = self.build_graphs(data)
        return self.encode_tensors(data.pos, self.node_input(data), graphs, keep_features)

    def encode_tensors(self, pos: Tensor, node_input: Tensor, graphs: Graphs,
                       keep_features: bool = True) -> PAMNetState:
        """:meth:`encode` on tensors: ``pos [N, 3]``, ``node_input`` (:meth:`node_input`) and the
        graphs of :meth:`build_graphs`. No host synchronization, no Python branch on data."""
        g = graphs
        x = self.embed_input(node_input)
        batch, num_graphs = g.batch, g.num_graphs
        if batch is None:  # graphs built by hand, without the batch fields
            batch, num_graphs = torch.zeros(x.size(0), dtype=torch.long, device=x.device), 1
        # Symmetric plexes: edge terms once per unordered pair, shared by both directions.
        dist_g = g.dist_g if g.pair_g is None else g.dist_g.index_select(0, g.pair_g)
        rbf_g = self.mlp_rbf_g(self.rbf_g(dist_g))
        rbf_l = None
        if self.config.local_plex:
            dist_l = g.dist_l if g.pair_l is None else g.dist_l.index_select(0, g.pair_l)
            rbf_l = self.mlp_rbf_l(self.rbf_l(dist_l))
            sbf = self._sbf(pos, g)
        outs_g, outs_l, atts_g, atts_l, z_g, z_l = [], [], [], [], [], []
        src_g = g.edge_index_g[0]
        for t, glob in enumerate(self.global_layer):
            x, o, a, z = glob(x, rbf_g, src_g, g.ptr_g, g.edge_row_g, g.transposes_g)
            outs_g.append(o), atts_g.append(a)
            if keep_features:
                z_g.append(z)
            if not self.config.local_plex:
                continue
            x, o, a, z = self._local(self.local_layer[t], x, rbf_l, sbf, g)
            outs_l.append(o), atts_l.append(a)
            if keep_features:
                z_l.append(z)
            del z
        node_out, alpha = self.fusion(outs_g, outs_l, atts_g, atts_l)
        return PAMNetState(node_out, alpha, z_g, z_l, rbf_g, rbf_l, g, pos, batch, num_graphs)

    def forward(self, data, graphs: Optional[Graphs] = None) -> Tensor:
        """``data``: PyG ``Data``/``Batch`` with ``pos [N, 3]``, ``z [N]`` or ``x``, ``batch [N]``
        (optional), ``edge_index`` (bonds, when ``local_graph='bonds'``); ``graphs``: optionally
        ``model.build_graphs(data)``, built beforehand (same result; the forward then makes no host
        synchronization). Returns ``[num_graphs, out_dim]`` (``[num_graphs, 1]`` = :math:`|\\mu|`
        with the dipole head)."""
        if graphs is None and getattr(self, "_max_memory", None) is not None:
            return self._head(self.encode(data, keep_features=self.dipole_head is not None))
        if graphs is None:
            graphs = self.build_graphs(data)
        return self.forward_tensors(data.pos, self.node_input(data), graphs)

    def forward_tensors(self, pos: Tensor, node_input: Tensor, graphs: Graphs) -> Tensor:
        """The forward on tensors (what ``torch.compile(fullgraph=True)`` and CUDA graphs capture, see
        :func:`pamnet_fast.nn.compile_model`): ``pos [N, 3]``, ``node_input`` from
        :meth:`node_input`, ``graphs`` from :meth:`build_graphs`. Returns ``[num_graphs, out_dim]``."""
        state = self.encode_tensors(pos, node_input, graphs, keep_features=self.dipole_head is not None)
        return self._head(state)

    def _head(self, state: PAMNetState) -> Tensor:
        if self.dipole_head is not None:
            return torch.linalg.vector_norm(self.dipole_head(state), dim=-1, keepdim=True)
        return readout(state.node_out, state.batch, state.num_graphs, self.config.readout)

    def dipole(self, data) -> Tensor:
        """The dipole vector ``[num_graphs, 3]`` (needs ``target='mu'``)."""
        if self.dipole_head is None:
            raise RuntimeError("this model has no dipole head; build it with target='mu'")
        return self.dipole_head(self.encode(data))

    def load_reference_state_dict(self, state_dict, strict: bool = True):
        """Load a state_dict saved by the authors' PAMNet code (their parameter names)."""
        from .compat import load_reference_state_dict
        return load_reference_state_dict(self, state_dict, strict=strict)


class PAMNet(_PAMNetBase):
    r"""PAMNet: global layers with distance messages, local layers with one- and two-hop angles.

    .. math::
        y_G = \mathrm{Readout}_{i \in G} \sum_{t=1}^{T} \sum_{p \in \{g, l\}} \alpha^t_{p,i}\, o^t_{p,i}

    Shapes: input batch with N atoms and B graphs -> ``[B, out_dim]``. See :class:`PAMNetConfig`.
    """
    local_cls = LocalMessagePassing

    def _make_sbf_mlps(self, n_sbf: int, d: int):
        self.mlp_sbf1 = MLP([n_sbf, d])  # one-hop
        self.mlp_sbf2 = MLP([n_sbf, d])  # two-hop

    def _sbf(self, pos: Tensor, g: Graphs):
        """Both projected spherical bases as one ``[T2 + T1, F]`` tensor in the order of the merged
        angle lists (:class:`~.graphs.AngleLists`), and those lists."""
        two, one = ops.triplet_angles(pos, g.edge_index_l, g.trip, supplement=self.config.reference_compat)
        sbf2 = self.mlp_sbf2(self.sbf(g.dist_l, two, g.trip.two_hop_kj))
        sbf1 = self.mlp_sbf1(self.sbf(g.dist_l, one, g.trip.one_hop_j2i))
        angles = g.angles if g.angles is not None else merged_angle_lists(g.trip)
        return torch.cat([sbf2, sbf1]).index_select(0, angles.order), angles

    def _local(self, layer, x, rbf_l, sbf, g: Graphs):
        sbf, angles = sbf
        return layer.forward_merged(x, rbf_l, sbf, angles.src, angles.ptr, g.edge_index_l, g.ptr_l,
                                    g.edge_ids_l, g.edge_row_l, g.transposes_l)


class PAMNetS(_PAMNetBase):
    r"""PAMNet-s: like :class:`PAMNet` but the local plex uses one-hop angles only (cheaper)."""
    local_cls = LocalMessagePassingS

    def _make_sbf_mlps(self, n_sbf: int, d: int):
        self.mlp_sbf = MLP([n_sbf, d])

    def _sbf(self, pos: Tensor, g: Graphs):
        _, one = ops.triplet_angles(pos, g.edge_index_l, g.trip, supplement=self.config.reference_compat,
                                    two_hop=False)
        return self.mlp_sbf(self.sbf(g.dist_l, one, g.trip.one_hop_j2i))

    def _local(self, layer, x, rbf_l, sbf, g: Graphs):
        return layer(x, rbf_l, sbf, g.edge_index_l, g.ptr_l, g.trip, g.edge_ids_l, g.edge_row_l,
                     g.transposes_l)
