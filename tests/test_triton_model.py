"""The model on the Triton kernels (the CUDA path): host reads of every launcher, PAMNet's reads and
launches, CUDA-graph capture (GPU only).

Shared setup and the interpreter's rules: ``_triton_util``.
"""
import importlib
import math

import pytest
import torch

triton = pytest.importorskip("triton")

from _triton_util import (DEV, KERNELS, _close, _edges, _gen, _interpreter_outside_modes, library,
                          _random_pos, _reads_of, _route_dense_to_triton, _route_ops_to_triton)

pytestmark = pytest.mark.triton


# --- host reads of every launcher, and the model on the Triton kernels (the CUDA path) ---

def test_launcher_host_reads_with_and_without_value_checks(monkeypatch):
    """With ``check_values=False`` the float ops read nothing from the device (CUDA-graph
    capturable); with the checks, one read each. The graph ops read their output sizes once, and
    the checks add one read."""
    _interpreter_outside_modes(monkeypatch)
    g = _gen(11)
    ei = _edges(40, 3.0, 1.2, 6)
    ptr = torch.searchsorted(ei[1], torch.arange(41))
    src = ei[0]
    e = src.numel()
    a, b = torch.randn(40, 8, generator=g), torch.randn(e, 8, generator=g)
    p, q = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    row = torch.arange(e) // 2
    dist, angle = torch.rand(e, generator=g) * 4, torch.rand(e, generator=g) * 3
    zeros = library.reference.spherical_bessel_zeros(3, 2)
    calls = {
        "segment_gather_mul": (KERNELS["segment_gather_mul"], a, src, b, ptr),
        "fused_edge_message": (KERNELS["fused_edge_message"], p, q, b, b, ptr, src, None),
        "fused_edge_message[edge_row]": (KERNELS["fused_edge_message"], p, q, b[: e // 2 + 1],
                                         b[: e // 2 + 1], ptr, src, row),
        "bessel_basis": (KERNELS["bessel_basis"], dist, torch.arange(1.0, 5.0) * math.pi, 5.0, 6),
        "spherical_basis": (KERNELS["spherical_basis"], dist, angle, zeros, 5.0, 6),
    }
    for name, (fn, *args) in calls.items():
        args = [t.to(DEV) if isinstance(t, torch.Tensor) else t for t in args]
        assert _reads_of(fn, *args, False) == [], name
        assert len(_reads_of(fn, *args, True)) == 1, name
    pos = _random_pos(40, 3.0, torch.float64, 6).to(DEV)
    assert len(_reads_of(KERNELS["radius_graph"], pos, 1.2, None, False, -1, False, False)) == 1
    assert len(_reads_of(KERNELS["radius_graph"], pos, 1.2, None, False, -1, False, True)) == 2
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, False)) == 1
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, True)) == 2
    # with the sizes counted by the caller: no read of its own (one, to verify them, with checks)
    sizes = library.reference.triplets(ei, 40, False)
    sizes = [sizes[0].numel(), sizes[3].numel()]
    assert _reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, False, sizes) == []
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, True, sizes)) == 2
    # backward kernels never read
    out_g = torch.randn(40, 8, generator=g).to(DEV)
    assert _reads_of(KERNELS["segment_gather_mul_backward"], out_g, a, src, b, ptr, True, True) == []
    assert _reads_of(KERNELS["fused_edge_message_backward"], out_g, p, q, b, b, ptr, src, None,
                     [True] * 4) == []


@pytest.fixture(scope="module")
def qm9_small():
    from torch_geometric.data import Batch
    from test_nn_common import qm9_molecules
    return Batch.from_data_list(qm9_molecules(8, min_atoms=1))  # float64 positions


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_model_on_triton_kernels_reads_and_launches(name, qm9_small, monkeypatch):
    """PAMNet's CUDA path, run through the Triton kernels: graph building reads the device twice
    (the input checks with the bond list's and its triplet lists' sizes; the radius graph's edge
    total), the forward given the graphs never, and each fused op is one kernel launch. The result
    equals the CPU kernels'."""
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
    torch.manual_seed(0)
    n_layer = 2
    model = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}[name](PAMNetConfig.qm9(dim=32, n_layer=n_layer))
    model = model.double().eval()
    with torch.no_grad():
        want = model(qm9_small)
    model, data = model.to(DEV), qm9_small.to(DEV)
    launches = []
    _route_ops_to_triton(monkeypatch, launches)
    with torch.no_grad():
        with HostSyncCounter() as counter:
            graphs = model.build_graphs(data)
        assert counter.syncs == ["tolist"] * 2, counter.syncs
        launches.clear()
        with HostSyncCounter() as counter:
            got = model(data, graphs)
    assert counter.syncs == [], counter.syncs
    if DEV == "cpu":
        # per layer: global edge sum, local neighbour messages (edge_message), local edge sum + gate
        # sum, angle sum(s); two basis kernels
        per_layer = 5
        bases = 2 + (2 if name == "PAMNet" else 1)
        assert len(launches) == n_layer * per_layer + bases, launches
    _close(got, want, torch.float64)


def test_two_radius_plexes_on_triton_kernels_read_twice(monkeypatch):
    """Two radius plexes (the RNA and PDBbind settings) on the Triton kernels, as on the GPU: the
    global search's edge total, then the local plex cut from the global one with its triplet sizes
    and the input checks (the Triton search is safe on any input, so it runs before they are read):
    two reads, where searching the local plex again takes four (the checks, both searches, the
    triplets); the same graphs. Input that fails a check still gets the check's error."""
    from test_nn_common import rna_structure
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.nn import PAMNetConfig
    from pamnet_fast.nn import graphs as graphs_module
    from pamnet_fast.nn.graphs import build_graphs
    cfg = PAMNetConfig.rna(knn=False, cutoff_g=6.0)
    pos = rna_structure(6, max_atoms=120).pos.to(DEV)
    launches, graphs, reads = [], {}, {}
    _route_ops_to_triton(monkeypatch, launches)
    monkeypatch.setattr(graphs_module, "_search_safe_unchecked", lambda pos: True)  # the Triton search
    for cut in (False, True):
        with HostSyncCounter() as counter:
            graphs[cut] = build_graphs(cfg, pos, None, local_from_global=cut)
        reads[cut] = counter.syncs
    assert reads == {False: ["tolist"] * 4, True: ["tolist"] * 2}, reads
    for a, b in zip(graphs[True], graphs[False]):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    for a, b in zip(graphs[True].trip, graphs[False].trip):
        assert torch.equal(a, b)
    bad = pos.clone()
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        build_graphs(cfg, bad, None, local_from_global=True)
    with pytest.raises(ValueError, match="sorted"):
        build_graphs(cfg, pos, torch.tensor([1] * 60 + [0] * 60, device=DEV), local_from_global=True)


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_model_float32_on_triton_kernels_with_dense_layers(name, qm9_small, monkeypatch):
    """float32 PAMNet with every op on its Triton kernel, the dense layers included (the CUDA path of
    a forward given the graphs): each Linear+SiLU is one launch instead of ``addmm``/``mm`` and
    ``silu``, and the residual blocks' second one also takes their ``add``; the other launches do
    not change. The result equals the C++/oneDNN path's within float32 rounding."""
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
    torch.manual_seed(0)
    n_layer = 2
    model = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}[name](PAMNetConfig.qm9(dim=32, n_layer=n_layer))
    model, data = model.eval().to(DEV), qm9_small.to(DEV)
    data.pos = data.pos.float()
    with torch.no_grad():
        graphs = model.build_graphs(data)
        want = model(data, graphs)
    launches, counts = [], {}
    _route_ops_to_triton(monkeypatch, launches)
    for dense in (False, True):
        if dense:
            _route_dense_to_triton(monkeypatch)
        elif DEV == "cpu":  # ops.linear as on CUDA (F.linear), linear_silu not yet on Triton
            monkeypatch.setattr(importlib.import_module("pamnet_fast.ops.dense"), "_fast", lambda *a: False)
        with torch.no_grad():
            model(data, graphs)  # the first call also fills the bases' constant caches
        launches.clear()
        with torch.no_grad(), HostSyncCounter() as counter:
            got = model(data, graphs)
        counts[dense] = (counter.kernel_ops, list(launches), counter.syncs)
        _close(got, want, torch.float32)
    (ops_before, before, _), (ops_after, after, syncs) = counts[False], counts[True]
    assert syncs == []
    dense_launches = after.count("_linear_act_kernel")
    assert [k for k in after if k != "_linear_act_kernel"] == before
    print(name, "dense launches", dense_launches, "aten ops", ops_before, "->", ops_after)
    # per layer: the global and the local plex 11 each (mlp_x1, mlp_x2, 3 Res x 2, mlp_out x 3) and
    # the angle MLP's 2; the shared basis projections: 4 (PAMNet: rbf_g, rbf_l, sbf1, sbf2) or 3
    assert dense_launches == n_layer * (11 + 11 + 2) + (4 if name == "PAMNet" else 3)
    # a launch replaces addmm/mm + silu by one allocation (new_empty; no kernel on CUDA), the
    # residual blocks' second launches (3 per plex layer) also an add
    assert ops_before - ops_after == dense_launches + n_layer * 2 * 3


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_model_forward_captures_in_a_cuda_graph(qm9_small):
    """The forward given the graphs reads nothing from the device, so it can be recorded in a CUDA
    graph; the replay equals the eager forward, also for a second batch of the same shapes."""
    from pamnet_fast.nn import PAMNet, PAMNetConfig, capture_forward
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2)).double().to(DEV).eval()
    data = qm9_small.to(DEV)
    captured = capture_forward(model, data)
    with torch.no_grad():
        want = model(data)
    _close(captured(data).clone(), want, torch.float64)
    moved = data.clone()
    moved.pos = data.pos * 1.01  # same graphs' shapes? not guaranteed: rebuild and compare shapes
    graphs = model.build_graphs(moved)
    try:
        got = captured(moved, graphs).clone()
    except ValueError:
        return  # other edge counts: refused with a clear error, as documented
    with torch.no_grad():
        _close(got, model(moved, graphs), torch.float64)


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_compiled_model_replays_as_cuda_graph(qm9_small):
    """compile_model(mode="reduce-overhead"): Inductor's CUDA-graph trees record the compiled
    forward (warm-up, record, replay); every call equals the eager forward."""
    from pamnet_fast.nn import PAMNet, PAMNetConfig, compile_model
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2)).to(DEV).eval()
    data = qm9_small.to(DEV)
    data.pos = data.pos.float()
    graphs = model.build_graphs(data)
    compiled = compile_model(model, mode="reduce-overhead", dynamic=False)
    with torch.no_grad():
        want = model(data, graphs)
        for _ in range(3):
            got = compiled(data, graphs).clone()
            _close(got, want, torch.float32)
    torch._dynamo.reset()
