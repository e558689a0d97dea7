"""Model benchmarks (issue 5): inference and train step on real QM9 batches, and RNA-Puzzle 5.

Models: PAMNet and PAMNet-s (ours, fused ops), our unfused reference PAMNet
(:func:`pamnet_fast.nn.reference.reference_forward` on the same parameters), and stock PyG DimeNet++
and SchNet made runnable here by :func:`pamnet_fast.pyg.accelerate` (our radius graph and triplets).
Graph construction is inside every timed forward, as in the models themselves.

Each case records in ``extra_info``: peak memory of one call (separate process), messages per
molecule, and FLOPs per call: matrix-multiply FLOPs counted by ``torch.utils.flop_counter`` plus,
separately, an analytic count for our fused message ops (which register no FLOP formula).
Ratios are taken against DimeNet++ (``baseline``) and the unfused reference PAMNet (``baseline2``).
"""
from __future__ import annotations

import functools

import pytest
import torch

import _data

HERE = __file__

MODELS = ["PAMNet", "PAMNet-s", "PAMNet (unfused reference)", "DimeNet++", "SchNet"]
# PAMNet with every dense layer on aten's F.linear (MKL), the GEMM backend of the PyG models: the part
# of PAMNet's lead that does not come from oneDNN's faster matmul (pamnet_fast.ops.dense). Largest batch only.
ATEN_GEMM = "PAMNet (aten GEMM)"
# PAMNet recomputing nothing in backward / also its node MLPs (the default, "edges", recomputes the
# local layers' edge and triplet blocks only): PAMNetConfig.activation_checkpointing False / True
NO_CHECKPOINTING = "PAMNet (no activation checkpointing)"
FULL_CHECKPOINTING = "PAMNet (full activation checkpointing)"
MODES = ["inference", "train"]
BATCH_SIZES_FULL = [128, 32]
BATCH_SIZES_QUICK = [8]


# ------------------------------------------------------------------------------------------ models

def _pamnet():
    try:
        from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
    except ImportError as exc:
        pytest.skip(f"pamnet_fast.nn is not available yet: {exc}")
    return PAMNet, PAMNetS, PAMNetConfig


def pamnet_config(kind: str = "qm9"):
    _, _, PAMNetConfig = _pamnet()
    cfg = PAMNetConfig.qm9() if kind == "qm9" else PAMNetConfig.rna()
    if _data.quick() and kind == "qm9":
        from dataclasses import replace
        cfg = replace(cfg, dim=32, n_layer=2)
    return cfg


def dimenet_pp_kwargs(cutoff: float = 5.0) -> dict:
    """The DimeNet++ QM9 hyper-parameters (Gasteiger et al. 2020)."""
    if _data.quick():
        return dict(hidden_channels=32, out_channels=1, num_blocks=1, int_emb_size=16, basis_emb_size=8,
                    out_emb_channels=32, num_spherical=3, num_radial=4, cutoff=cutoff)
    return dict(hidden_channels=128, out_channels=1, num_blocks=4, int_emb_size=64, basis_emb_size=8,
                out_emb_channels=256, num_spherical=7, num_radial=6, cutoff=cutoff)


def schnet_kwargs() -> dict:
    """PyG's SchNet defaults (hidden 128, 128 filters, 6 interactions, 50 Gaussians, cutoff 10 Å)."""
    if _data.quick():
        return dict(hidden_channels=32, num_filters=32, num_interactions=2, num_gaussians=20, cutoff=10.0)
    return dict(hidden_channels=128, num_filters=128, num_interactions=6, num_gaussians=50, cutoff=10.0)


def make_model(name: str, kind: str = "qm9"):
    """``(module, forward(batch) -> [B, 1])``; skips when the model's code is not there yet."""
    torch.manual_seed(0)
    if name == ATEN_GEMM:
        from pamnet_fast import ops
        model, _ = make_model("PAMNet", kind)

        def forward(b):
            with ops.aten_linear():
                return model(b)
        return model, forward
    if name in (NO_CHECKPOINTING, FULL_CHECKPOINTING):
        from dataclasses import replace
        PAMNet, _, _ = _pamnet()
        model = PAMNet(replace(pamnet_config(kind), activation_checkpointing=name == FULL_CHECKPOINTING))
        return model, model
    if name in ("PAMNet", "PAMNet-s", "PAMNet (unfused reference)"):
        PAMNet, PAMNetS, _ = _pamnet()
        cfg = pamnet_config(kind)
        if name == "PAMNet (unfused reference)":
            try:
                from pamnet_fast.nn.reference import reference_forward
            except ImportError as exc:
                pytest.skip(f"pamnet_fast.nn.reference is not available yet: {exc}")
            model = PAMNet(cfg)
            return model, lambda b: reference_forward(model, b)
        model = (PAMNet if name == "PAMNet" else PAMNetS)(cfg)
        return model, model
    import pamnet_fast.pyg
    pamnet_fast.pyg.accelerate()
    if name == "DimeNet++":
        _data.cache_dimenet_sympy()
        from torch_geometric.nn.models import DimeNetPlusPlus
        model = DimeNetPlusPlus(**dimenet_pp_kwargs())
    elif name == "SchNet":
        from torch_geometric.nn.models import SchNet
        model = SchNet(**schnet_kwargs())
    else:
        raise ValueError(name)
    return model, lambda b: model(b.z, b.pos, b.batch)


def build_model_case(model_name: str, batch_size: int, mode: str) -> _data.Case:
    batch = _data.qm9_batch(batch_size)
    model, forward = make_model(model_name)
    return _case(model, forward, batch, mode)


def _case(model, forward, batch, mode: str) -> _data.Case:
    if mode == "inference":
        model.eval()

        def run():
            with torch.no_grad():
                return forward(batch)
        return _data.Case(run=run)
    model.train()
    # on CUDA every model steps with fused Adam (one kernel for all parameters), as the trainer does;
    # on the CPU the default (foreach), as in the recorded CPU runs
    cuda = next(model.parameters()).is_cuda
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True if cuda else None)

    def step():
        out = forward(batch)
        loss = out.float().pow(2).mean()
        loss.backward()
        opt.step()
        return loss.detach()
    return _data.Case(run=step, reset=lambda: opt.zero_grad(set_to_none=True))


# ------------------------------------------------------------------------------ messages and FLOPs

def message_counts(model_name: str, model, batch) -> dict:
    """Messages per molecule: global edges + local edges + triplets (PAMNet: two-hop and one-hop;
    PAMNet-s: one-hop only), DimeNet++: edges + two-hop triplets, SchNet: edges."""
    from pamnet_fast import ops
    B = int(batch.num_graphs)
    if model_name.startswith("PAMNet"):
        g = model.build_graphs(batch)
        eg, el = g.edge_index_g.size(1), g.edge_index_l.size(1)
        t2, t1 = g.trip.two_hop_kj.numel(), g.trip.one_hop_j2i.numel()
        if model_name == "PAMNet-s":
            t2 = 0
        return {"global_edges_per_molecule": eg / B, "local_edges_per_molecule": el / B,
                "triplets_per_molecule": (t2 + t1) / B, "messages_per_molecule": (eg + el + t2 + t1) / B}
    cutoff = model.cutoff
    ei = ops.radius_graph(batch.pos, cutoff, batch.batch)
    if model_name == "SchNet":
        return {"edges_per_molecule": ei.size(1) / B, "messages_per_molecule": ei.size(1) / B}
    t = ops.triplets(ei, batch.num_nodes).two_hop_kj.numel()
    return {"edges_per_molecule": ei.size(1) / B, "triplets_per_molecule": t / B,
            "messages_per_molecule": (ei.size(1) + t) / B}


def _fused_op_flop_formulas() -> dict:
    """Analytic FLOPs of our custom ops (they register none): elementwise arithmetic per [E, F] entry.
    segment_gather_mul: mul + add = 2; its backward: 2 for grad a (mul, add), 1 for grad b.
    fused_edge_message: 2 adds + SiLU (~4) + mul + add = 8; its backward ~16."""
    ns = torch.ops.pamnet_fast
    formulas = {}

    def sgm(a, src, b, ptr, *args, out_shape=None, **kw):
        return 2 * b[0] * b[1]

    def sgm_bwd(grad_out, a, src, b, ptr, need_a=True, need_b=True, *args, out_shape=None, **kw):
        return b[0] * b[1] * (2 * bool(need_a) + bool(need_b))

    def fem(p, q, r, s, ptr, src, *args, out_shape=None, **kw):
        return 8 * src[0] * r[1]  # per edge (rows of r may be shared by edges)

    def fem_bwd(grad_out, p, q, r, s, ptr, src, *args, out_shape=None, **kw):
        return 16 * src[0] * r[1]

    for name, fn in (("segment_gather_mul", sgm), ("segment_gather_mul_backward", sgm_bwd),
                     ("fused_edge_message", fem), ("fused_edge_message_backward", fem_bwd)):
        try:
            formulas[getattr(ns, name)] = fn
        except (AttributeError, RuntimeError):
            pass

    def onednn_linear(x, w, *args, out_shape=None, **kw):  # a matmul: counted with them
        return 2 * x[0] * x[1] * w[0]

    try:
        formulas[torch.ops.mkldnn._linear_pointwise] = onednn_linear
    except (AttributeError, RuntimeError):
        pass
    return formulas


_CUSTOM_OPS = {"segment_gather_mul", "segment_gather_mul_backward", "fused_edge_message",
               "fused_edge_message_backward"}


def count_flops(case: _data.Case) -> dict:
    """FLOPs of one call: ``matmul_gflop`` (FlopCounterMode: mm/addmm/bmm/conv...) and
    ``fused_op_gflop`` (the analytic formulas above). Elementwise and indexing work is not counted by
    either, for any model."""
    from torch.utils.flop_counter import FlopCounterMode
    case.reset()
    mode = FlopCounterMode(display=False, custom_mapping=_fused_op_flop_formulas())
    with mode:
        case.run()
    case.reset()
    fused = 0
    total = 0
    for op, n in mode.get_flop_counts()["Global"].items():
        total += n
        if str(op).split(".")[-1] in _CUSTOM_OPS or "pamnet_fast" in str(op):
            fused += n
    return {"matmul_gflop": round((total - fused) / 1e9, 3), "fused_op_gflop": round(fused / 1e9, 3)}


# ------------------------------------------------------------------------------------------- QM9

def _qm9_params():
    sizes = BATCH_SIZES_QUICK if _data.quick() else BATCH_SIZES_FULL
    return ([pytest.param(m, bs, mode, id=f"{mode}-bs{bs}-{m}") for mode in MODES for bs in sizes
             for m in MODELS + ([ATEN_GEMM] if bs == sizes[0] else [])] +
            # the other activation checkpointing settings: train step, largest batch
            [pytest.param(m, sizes[0], "train", id=f"train-bs{sizes[0]}-{m}")
             for m in (FULL_CHECKPOINTING, NO_CHECKPOINTING)])


@pytest.mark.parametrize("model_name,batch_size,mode", _qm9_params())
def test_qm9(benchmark, model_name, batch_size, mode):
    try:
        batch = _data.qm9_batch(batch_size)
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"QM9 unavailable: {exc}")
    model, forward = make_model(model_name)  # skips if the model code is missing
    benchmark.group = f"QM9 batch {batch_size}: {'inference' if mode == 'inference' else 'train step'}"
    benchmark.extra_info.update(model=model_name, batch_size=batch_size, mode=mode,
                                baseline=model_name == "DimeNet++",
                                baseline2=model_name == "PAMNet (unfused reference)",
                                parameters=sum(p.numel() for p in model.parameters()),
                                threads=torch.get_num_threads(), **_data.batch_stats(batch))
    with torch.no_grad():
        benchmark.extra_info.update({k: round(v, 1) for k, v in message_counts(model_name, model, batch).items()})
    case = _case(model, forward, batch, mode)
    benchmark.extra_info.update(count_flops(case))
    _data.attach_memory(benchmark, _data.peak_memory(
        HERE, "build_model_case", dict(model_name=model_name, batch_size=batch_size, mode=mode)))
    benchmark.pedantic(case.run, setup=case.reset, **_data.rounds(5))


# ----------------------------------------------------------------------------------- RNA-Puzzle 5

RNA_MODELS = ["PAMNet", "DimeNet++"]
DIMENET_RNA_CUTOFF = 20.0


def rna_data():
    from torch_geometric.data import Data
    st = _data.rna_puzzle5()
    return Data(z=st.z.long(), pos=st.pos.float(), batch=torch.zeros(st.z.numel(), dtype=torch.long))


@functools.lru_cache(maxsize=None)
def dimenet_rna_estimate() -> dict:
    """Edges, triplets and a lower bound on the memory of DimeNet++ on RNA-Puzzle 5 at 20 Å: per
    triplet the spherical basis (num_spherical x num_radial floats), its basis embedding and the
    int_emb-wide down-projected messages gathered to triplets and their product (2 x int_emb)."""
    from pamnet_fast import ops
    d = rna_data()
    ei = ops.radius_graph(d.pos, DIMENET_RNA_CUTOFF)
    deg = torch.bincount(ei[1], minlength=d.num_nodes).double()
    triplets = int((deg[ei[0]] - 1).sum())  # edges k -> j into the source j of each j -> i, k != i
    kw = dimenet_pp_kwargs(DIMENET_RNA_CUTOFF)
    per_triplet = kw["num_spherical"] * kw["num_radial"] + kw["basis_emb_size"] + 2 * kw["int_emb_size"]
    return {"edges": int(ei.size(1)), "triplets": triplets, "bytes_lower_bound": 4.0 * per_triplet * triplets}


def build_rna_case(model_name: str) -> _data.Case:
    data = rna_data()
    if model_name == "PAMNet":
        PAMNet, _, _ = _pamnet()
        torch.manual_seed(0)
        model = PAMNet(pamnet_config("rna"))
        return _case(model, model, data, "inference")
    model, forward = make_model("DimeNet++")
    model.cutoff = DIMENET_RNA_CUTOFF
    return _case(model, forward, data, "inference")


@pytest.mark.parametrize("model_name", RNA_MODELS)
def test_rna_puzzle5(benchmark, model_name):
    data = rna_data()  # skips without the data
    benchmark.group = f"RNA-Puzzle 5 native ({data.num_nodes} atoms), inference, global cutoff 20 Å"
    benchmark.extra_info.update(model=model_name, atoms=data.num_nodes, mode="inference",
                                baseline=model_name == "DimeNet++", threads=torch.get_num_threads())
    if model_name == "DimeNet++":
        est = dimenet_rna_estimate()
        budget = _data.memory_budget_bytes()
        if est["bytes_lower_bound"] > budget:
            pytest.skip(f"DimeNet++ at {DIMENET_RNA_CUTOFF:g} Å on RNA-Puzzle 5: {est['edges']:,} edges, "
                        f"{est['triplets']:,} triplets, >= {est['bytes_lower_bound'] / 2**30:,.0f} GiB "
                        f"(budget {budget / 2**30:.0f} GiB)")
    case = build_rna_case(model_name)
    if model_name == "PAMNet":
        PAMNet, _, _ = _pamnet()
        torch.manual_seed(0)
        m = PAMNet(pamnet_config("rna"))
        with torch.no_grad():
            g = m.build_graphs(data)
        eg, el = g.edge_index_g.size(1), g.edge_index_l.size(1)
        t = g.trip.two_hop_kj.numel() + g.trip.one_hop_j2i.numel()
        benchmark.extra_info.update(global_edges=eg, local_edges=el, triplets=t, messages=eg + el + t)
    benchmark.extra_info.update(count_flops(case))
    _data.attach_memory(benchmark, _data.peak_memory(HERE, "build_rna_case", dict(model_name=model_name)))
    benchmark.pedantic(case.run, setup=case.reset, **_data.rounds(5))
