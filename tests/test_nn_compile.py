"""torch.compile(fullgraph=True, dynamic=True) of the PAMNet forward with the graphs built outside
(pamnet_fast.nn.compile_model): no graph break, one graph for batches of different sizes, the eager
model's outputs and gradients. CPU; the "eager" backend checks Dynamo's capture (what fullgraph and
recompiles are about), "aot_eager" also traces the backward through the ops' fake kernels."""
from __future__ import annotations

import pytest
import torch

from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS, compile_model
from test_nn_common import random_batch, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")
MODELS = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}


def _batches(dtype):
    return [random_batch([5, 7, 4], seed=2, dtype=dtype), random_batch([6, 9, 8, 3], seed=3, dtype=dtype)]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _check(model, compiled, data, tol):
    graphs = model.build_graphs(data)
    model.zero_grad()
    out = compiled(data, graphs)
    out.square().sum().backward()
    got = _grads(model)
    model.zero_grad()
    ref = model(data)
    ref.square().sum().backward()
    want = _grads(model)
    assert out.shape == ref.shape and rel_err(out, ref) <= tol
    assert max(rel_err(got[n], want[n]) for n in want) <= tol


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_fullgraph_dynamic_one_graph_for_two_batch_sizes(name):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = MODELS[name](PAMNetConfig.qm9(dim=16, n_layer=2)).double()
    compiled = compile_model(model, backend="eager")  # fullgraph=True: a graph break raises
    for data in _batches(torch.float64):
        _check(model, compiled, data, 1e-12)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    # graphs built inside the call when not given
    data = _batches(torch.float64)[0]
    assert rel_err(compiled(data), model(data)) <= 1e-12
    torch._dynamo.reset()


@pytest.mark.slow
def test_fullgraph_aot_training_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2))
    compiled = compile_model(model, backend="aot_eager")
    for data in _batches(torch.float32):
        _check(model, compiled, data, 1e-4)
    torch._dynamo.reset()


def test_compile_model_rejects_what_it_cannot_compile():
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1))
    model.max_memory = "1GiB"
    with pytest.raises(ValueError, match="max_memory"):
        compile_model(model)
    with pytest.raises(TypeError, match="forward_tensors"):
        compile_model(torch.nn.Linear(2, 2))


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # Graphs, Triplets
        return type(x)(*[_to_meta(v) for v in x])
    return x


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_forward_runs_on_the_meta_device(name):
    """What CUDA-graph capture needs, checked without a GPU: on the meta device (no data at all) any
    value read by the host raises, and so does any host tensor the forward would create and mix in;
    forward and backward must still run."""
    torch.manual_seed(0)
    model = MODELS[name](PAMNetConfig.qm9(dim=16, n_layer=2))
    data = _batches(torch.float32)[0]
    graphs, node_input = model.build_graphs(data), model.node_input(data)
    want = model.forward_tensors(data.pos, node_input, graphs)
    model = model.to("meta")
    out = model.forward_tensors(_to_meta(data.pos), _to_meta(node_input), _to_meta(graphs))
    assert out.device.type == "meta" and out.shape == want.shape
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


def test_fullgraph_reference_compat_rna_model():
    """The authors' RNA model (kNN plexes, their bases in plain PyTorch) compiles as one graph too
    (its basis constants live on the module: nothing cached is traced)."""
    from torch._dynamo.utils import counters
    from test_nn_common import rna_structure
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.rna(reference_compat=True, knn_k=8)).double()
    data = rna_structure(6, max_atoms=80)
    compiled = compile_model(model, backend="eager")
    assert rel_err(compiled(data, model.build_graphs(data)), model(data)) <= 1e-12
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_trainer_compiles_pamnet_fullgraph_and_other_models_generically():
    """``--compile`` takes nn.compile_model (fullgraph, graphs outside) for PAMNet; the wrapper follows
    train()/eval() of its model (the trainer switches modes on it)."""
    from pamnet_fast.nn import CompiledModel, PAMNet, PAMNetConfig
    from pamnet_fast.train.trainer import compile_model
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1))
    compiled = compile_model(model)
    assert isinstance(compiled, CompiledModel) and compiled.model is model
    assert compiled.eval() is compiled and not model.training
    compiled.train()
    assert model.training
    assert not isinstance(compile_model(torch.nn.Linear(2, 2)), CompiledModel)


def test_reduce_overhead_mode_compiles_with_inductor_for_a_fixed_shape():
    """``compile_model(model, mode="reduce-overhead", dynamic=False)``: Inductor compiles the whole
    forward for one batch shape (the CUDA-graph mode; on the CPU Inductor skips the CUDA graph and
    the rest is the same); outputs equal the eager model's. On a GPU, tests/test_triton_model.py replays
    it as a CUDA graph."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=8, n_layer=1)).eval()
    data = _batches(torch.float32)[0]
    graphs = model.build_graphs(data)
    compiled = compile_model(model, mode="reduce-overhead", dynamic=False)
    with torch.no_grad():
        for _ in range(2):
            out = compiled(data, graphs)
        assert rel_err(out, model(data, graphs)) <= 1e-5
    torch._dynamo.reset()
