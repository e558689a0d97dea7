"""Trainer: learning, schedule, EMA, early stopping, time budget, checkpoints and exact resume."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pamnet_fast.train import EMA, CheckpointMismatchError, TrainConfig, Trainer, load_checkpoint
from pamnet_fast.train.tiny import TinyConfig, TinyModel, synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


# tiny tensors: intra-op threads only add overhead (and spin under load)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    ds = synthetic_dataset(320, seed=0)
    return ds[:256], ds[256:288], ds[288:]


def _cfg(**kw):
    base = dict(epochs=3, batch_size=16, lr=3e-3, target_index=0, quiet=True, checkpoint_every=0,
                plots=False)
    base.update(kw)
    return TrainConfig(**base)


def _train(data, out=None, model_cfg=None, resume=False, **kw):
    torch.manual_seed(0)
    model = TinyModel(model_cfg or TinyConfig())
    tr = Trainer(model, *data, _cfg(**kw), out_dir=out, model_name="tiny")
    return tr, tr.fit(resume=resume)


def test_learns_and_writes_outputs(data, tmp_path):
    # mean standardization: this synthetic target is mostly linear in the composition, which the
    # element baseline would already fit before the first step (tested below)
    tr, res = _train(data, tmp_path, epochs=6, plots=True, element_ref=False)
    h = tr.history
    assert [r["epoch"] for r in h] == list(range(1, 7))
    assert h[-1]["val_mae"] < 0.7 * h[0]["val_mae"]
    assert res["test_mae"] < 0.8 * res["test_mae_train_mean"]
    assert res["stop_reason"] == "epochs" and res["steps"] == 6 * 16
    for f in ("checkpoint.pt", "model.pt", "metrics.csv", "metrics.json", "learning_curves.png",
              "parity_test.png", "test_predictions.csv", "results.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 7
    assert json.loads((tmp_path / "metrics.json").read_text())[-1]["val_mae"] == h[-1]["val_mae"]
    assert len((tmp_path / "test_predictions.csv").read_text().strip().splitlines()) == 33
    st = load_checkpoint(tmp_path / "checkpoint.pt")
    for k in ("model", "ema", "optimizer", "scheduler", "rng", "epoch", "step", "sampler", "best",
              "best_state", "model_config", "norm"):
        assert k in st, k
    assert st["finished"] and st["model_config"] == {"hidden": 16, "out_dim": 1, "max_z": 10}


def test_element_baseline_fits_composition_before_training(data):
    # y = sum(z) + a geometric term: the per-element baseline alone removes sum(z)
    tr, res = _train(data, epochs=2)
    assert tr.norm.element_ref is not None
    torch.testing.assert_close(tr.norm.element_ref[1:10, 0],
                               torch.arange(1, 10, dtype=torch.float64) + tr.norm.element_ref[1, 0] - 1,
                               rtol=0, atol=0.5)
    assert res["test_mae_element_baseline"] < 0.5 * res["test_mae_train_mean"]
    assert res["test_mae"] < res["test_mae_train_mean"]
    plain, res_plain = _train(data, epochs=2, element_ref=False)
    assert plain.norm.element_ref is None and "test_mae_element_baseline" not in res_plain


def test_lr_schedule_warmup_and_decay(data):
    tr, _ = _train(data, epochs=2, warmup_epochs=1.0, decay_epochs=3.0, decay_rate=0.1, lr=1e-3)
    # 16 steps/epoch: lr after s scheduler steps = lr * min(1, (s+1)/16) * 0.1 ** (s / 48)
    lrs = [r["lr"] for r in tr.history]
    assert lrs[0] == pytest.approx(1e-3 * 0.1 ** (16 / 48), rel=1e-12)
    assert lrs[1] == pytest.approx(1e-3 * 0.1 ** (32 / 48), rel=1e-12)
    f = tr.scheduler.lr_lambdas[0]
    assert f(0) == pytest.approx(1 / 16) and f(7) == pytest.approx(0.5 * 0.1 ** (7 / 48))


def test_ema_math():
    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, decay=0.9, warmup=False)
    with torch.no_grad():
        m.weight.fill_(2.0)
    ema.update(m)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 1.1))
    e2 = EMA(m, decay=0.999, warmup=True)
    assert e2.current_decay() == pytest.approx(0.1)  # (1+0)/(10+0)


def test_early_stopping(data):
    # lr 0 and EMA decay 0: the weights never change, so nothing improves after epoch 1
    tr, res = _train(data, epochs=20, lr=0.0, ema_decay=0.0, patience=2)
    assert res["stop_reason"] == "early_stopping" and res["epochs"] == 3 and res["best_epoch"] == 1


def test_max_time_stops_cleanly(data, tmp_path):
    tr = Trainer(TinyModel(), *data, _cfg(epochs=1000, max_time=1.5), out_dir=tmp_path, model_name="tiny")
    tr._hooks.append(lambda t, s: time.sleep(0.01))
    t0 = time.time()
    res = tr.fit()
    assert time.time() - t0 < 6
    assert res["stop_reason"] == "max_time" and res["steps"] > 0 and math.isfinite(res["test_mae"])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["finished"]
    assert (tmp_path / "model.pt").exists()


def test_checkpoint_from_other_model_is_rejected(data, tmp_path):
    _train(data, tmp_path, epochs=1)
    with pytest.raises(CheckpointMismatchError, match=r"hidden: checkpoint=16, current=8"):
        _train(data, tmp_path, model_cfg=TinyConfig(hidden=8), epochs=2, resume=True)
    tr = Trainer(TinyModel(), *data, _cfg(epochs=2), out_dir=tmp_path, model_name="other")
    with pytest.raises(CheckpointMismatchError, match="model: checkpoint='tiny', current='other'"):
        tr.fit(resume=True)
    with pytest.raises(CheckpointMismatchError, match="batch size 16"):
        _train(data, tmp_path, epochs=2, batch_size=32, resume=True)


def test_checkpoint_compatibility_ignores_activation_checkpointing():
    """activation_checkpointing trades time for memory and leaves the model as it is: a checkpoint
    written with one value resumes or loads with another (old checkpoints have True); every other
    config field still has to match."""
    from pamnet_fast.nn import PAMNetConfig
    from pamnet_fast.train.checkpoint import check_compatible
    old = PAMNetConfig.qm9(dim=16, activation_checkpointing=True).to_dict()
    new = PAMNetConfig.qm9(dim=16).to_dict()
    assert new["activation_checkpointing"] == "edges"
    check_compatible({"model_name": "PAMNet", "model_config": old}, "PAMNet", new)
    with pytest.raises(CheckpointMismatchError, match="dim: checkpoint=16, current=32"):
        check_compatible({"model_name": "PAMNet", "model_config": old}, "PAMNet",
                         PAMNetConfig.qm9(dim=32).to_dict())


SCRIPT = textwrap.dedent("""
    import sys, time, json, torch
    torch.set_num_threads(1)
    from pamnet_fast.train import Trainer, TrainConfig
    from pamnet_fast.train.tiny import TinyModel, synthetic_dataset
    out, resume, sleep = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
    ds = synthetic_dataset(320, seed=0)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-3, target_index=0, quiet=True,
                      checkpoint_every=5, plots=False)
    tr = Trainer(TinyModel(), ds[:256], ds[256:288], ds[288:], cfg, out_dir=out, model_name="tiny")
    if sleep:
        tr._hooks.append(lambda t, s: time.sleep(sleep))
    res = tr.fit(resume=resume)
    torch.save({"res": res, "history": tr.history, "model": tr.module.state_dict(),
                "ema": tr.ema.module.state_dict()}, out + "/final.pt")
""")


def _run(script, out, resume, sleep):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(script), str(out), "1" if resume else "0", str(sleep)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_resume_is_bit_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref = _run(script, ref_dir, False, 0.0)
    cut = _run(script, cut_dir, False, 0.05)  # 64 steps of >= 50 ms: plenty of time to kill it
    ck = cut_dir / "checkpoint.pt"
    t0 = time.time()
    while time.time() - t0 < 60:
        if ck.exists() and load_checkpoint(ck)["step"] >= 20:
            break
        time.sleep(0.02)
    time.sleep(0.07)  # die somewhere after the checkpoint, mid-epoch
    cut.send_signal(signal.SIGKILL)
    assert cut.wait() == -signal.SIGKILL, cut.stdout.read().decode()
    assert not (cut_dir / "final.pt").exists()
    st = load_checkpoint(ck)
    assert 20 <= st["step"] < 64 and not st["finished"]
    res = _run(script, cut_dir, True, 0.0)
    assert res.wait() == 0, res.stdout.read().decode()
    assert ref.wait() == 0, ref.stdout.read().decode()
    a = torch.load(ref_dir / "final.pt", weights_only=True)
    b = torch.load(cut_dir / "final.pt", weights_only=True)
    assert a["res"]["test_mae"] == b["res"]["test_mae"]
    assert a["res"]["best_val_mae"] == b["res"]["best_val_mae"]
    assert [h["val_mae"] for h in a["history"]] == [h["val_mae"] for h in b["history"]]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"][k], b["ema"][k]), k
