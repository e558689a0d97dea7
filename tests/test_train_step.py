"""The trainer's step: fused/foreach Adam (and resuming across implementations), foreach EMA and clipping,
no host synchronization per step, and ``--compile``."""
import json

import pytest
import torch
from pamnet_fast.host_syncs import HostSyncCounter
from pamnet_fast.train import EMA, TrainConfig, Trainer, load_checkpoint
from pamnet_fast.train.optim import adam_impl, make_adam
from pamnet_fast.train.tiny import TinyModel, synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def data():
    ds = synthetic_dataset(96, seed=0)
    return ds[:64], ds[64:80], ds[80:]


def _cfg(**kw):
    base = dict(epochs=2, batch_size=16, lr=3e-3, target_index=0, quiet=True, checkpoint_every=0, plots=False)
    return TrainConfig(**{**base, **kw})


def _trainer(data, out=None, **kw):
    torch.manual_seed(0)
    return Trainer(TinyModel(), *data, _cfg(**kw), out_dir=out, model_name="tiny")


def test_adam_implementation_choice():
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert adam_impl(cpu) == "fused" and adam_impl(cpu, "foreach") == "foreach"
    assert adam_impl(cpu + [torch.nn.Parameter(torch.zeros(2, device="meta"))]) == "foreach"  # mixed devices
    with pytest.raises(ValueError, match="unknown Adam implementation 'apex'; valid: auto, fused, foreach, loop"):
        adam_impl(cpu, "apex")
    g = make_adam(cpu, 1e-3, impl="foreach").param_groups[0]
    assert g["foreach"] and not g["fused"]
    assert make_adam(cpu, 1e-3).param_groups[0]["fused"]
    if torch.cuda.is_available():
        gpu = [torch.nn.Parameter(torch.zeros(3, device="cuda"))]
        assert adam_impl(gpu) == "fused" and make_adam(gpu, 1e-3).param_groups[0]["fused"]


@pytest.mark.parametrize("first,second", [("foreach", "fused"), ("fused", "foreach"), ("foreach", "loop")])
def test_resume_across_adam_implementations(data, tmp_path, first, second):
    """A checkpoint written with one implementation resumes with another: the optimizer keeps its own
    flags (fused step counters on the parameters' device, foreach ones on the host) and the run ends
    where an uninterrupted run ends (the implementations round differently: close, not bit-equal)."""
    ref = _trainer(data, epochs=2, optimizer_impl=first)
    ref.fit()
    _trainer(data, tmp_path, epochs=1, optimizer_impl=first).fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    tr = _trainer(data, tmp_path, epochs=2, optimizer_impl=second)
    tr.fit(resume=True)
    g = tr.optimizer.param_groups[0]
    assert bool(g["fused"]) == (second == "fused") and bool(g["foreach"]) == (second == "foreach")
    assert tr.step == 8
    for p in tr.module.parameters():
        st = tr.optimizer.state[p]
        assert float(st["step"]) == 8
        assert st["step"].dtype == torch.float32 and st["exp_avg"].dtype == p.dtype
    for a, b in zip(tr.module.parameters(), ref.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_train_step_has_no_host_sync(data):
    """The whole step (batch to device, forward, loss, backward, clipping, Adam, schedule, EMA, running
    sums) reads nothing back from the device with fused Adam (the default on CUDA and CPU).
    With foreach Adam the only reads are Adam's step counters, which foreach Adam keeps on the host."""
    for impl in ("fused", "foreach"):
        tr = _trainer(data, epochs=1, optimizer_impl=impl)
        seen = {"step": []}
        step = tr._train_step

        def counted(fn, key):
            def run(*args):
                with HostSyncCounter(python_reads=False) as c:
                    fn(*args)
                seen[key].append(c)
            return run
        tr._train_step = counted(step, "step")
        tr.fit()
        assert len(seen["step"]) == 4
        counters = {id(s["step"]) for s in tr.optimizer.state.values()}
        for c in seen["step"]:
            if impl == "fused":
                assert c.syncs == []
            else:
                assert all(name == "_local_scalar_dense" and id(t) in counters and t.device.type == "cpu"
                           for name, t in zip(c.syncs, c.sync_tensors)), c.syncs


def _update_ops(n_layers: int, impl: str):
    """aten ops dispatched by one Trainer._update (clip + Adam + schedule + EMA) of an MLP."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(n_layers)])
    tr = Trainer(model, [], config=_cfg(optimizer_impl=impl))
    tr.module, tr._params = model, list(model.parameters())
    tr.optimizer = make_adam(tr._params, 1e-3, impl=impl)
    tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
    tr.ema = EMA(model)
    for _ in range(2):
        model(torch.randn(2, 4)).sum().backward()
        with HostSyncCounter(python_reads=False) as c:
            tr._update()
    return [o for o in c.op_names if o != "_local_scalar_dense"]


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_update_dispatches_a_fixed_number_of_ops(impl):
    """No per-tensor kernels: 4 or 24 parameter tensors, the same ops (fused: 13, foreach: 20)."""
    few, many = _update_ops(2, impl), _update_ops(12, impl)
    assert few == many
    assert few[few.index("_record_function_exit") + 1:] == ["_foreach_lerp_"]  # the EMA, after Adam
    assert "_foreach_norm" in few  # clipping
    assert ("_fused_adam_" in few) == (impl == "fused")
    assert len(few) <= (15 if impl == "fused" else 25), few
    loop = _update_ops(2, "loop")
    assert len(_update_ops(12, "loop")) > len(loop)  # the per-tensor Adam grows (the test can fail)


def test_ema_foreach_matches_formula_and_copies_int_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    ema = EMA(model, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model.train()
    model(torch.randn(8, 3))  # BatchNorm updates running stats and num_batches_tracked
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    src = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * src[k], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(v, src[k]) and int(v) == 1, k


@pytest.mark.slow
def test_cli_compile_run_saves_plain_state_dict(tmp_path, capsys):
    """``train --compile`` (tiny model; inductor compile on 2 CPU cores: ~20-40 s): the checkpoints hold
    the uncompiled module's state dict, which loads into an uncompiled model for ``evaluate``."""
    import importlib.util
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed")
    from pamnet_fast import cli
    out = tmp_path / "run"
    common = ["--cache-dir", str(tmp_path / "cache"), "--limit", "200", "--quiet", "--num-threads", "1"]
    assert cli.main(["train", "--model", "tiny", "--compile", "--epochs", "2", "--batch-size", "16",
                     "--train-size", "64", "--lr", "1e-2", "--out", str(out)] + common) == 0
    res = json.loads((out / "results.json").read_text())[0]
    assert res["steps"] == 8 and res["test_mae"] < res["test_mae_train_mean"]
    for f in ("model.pt", "checkpoint.pt"):
        st = load_checkpoint(out / f)
        assert st["train_config"]["compile"] is True
        keys = list(st["model"]) + list(st.get("ema", {}).get("module", {}))
        assert keys and not any("_orig_mod" in k for k in keys), keys
    model, st, _ = cli.load_trained(str(out))
    assert not isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)] + common) == 0
    mae = float(capsys.readouterr().out.split("MAE:")[1].split()[0])
    assert mae == pytest.approx(res["test_mae"], rel=1e-5)
