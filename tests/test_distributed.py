"""DDP under torchrun (2 CPU processes, gloo) equals a single-process run with the same global batch."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from pamnet_fast.train import TrainConfig, Trainer
from pamnet_fast.train.tiny import TinyModel, synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 16

SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    import pamnet_fast.train.trainer as T
    from pamnet_fast.train import Trainer, TrainConfig
    from pamnet_fast.train.tiny import TinyModel, synthetic_dataset
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    writes = []
    for name in ("save_checkpoint", "write_metrics", "plot_learning_curves", "plot_parity"):
        real = getattr(T, name)
        def spy(*a, _real=real, _name=name, **k):
            writes.append(_name)
            return _real(*a, **k)
        setattr(T, name, spy)
    ds = synthetic_dataset(320, seed=0)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=%d, lr=3e-3, target_index=0, quiet=True,
                      checkpoint_every=10, plots=True)
    tr = Trainer(TinyModel(), ds[:256], ds[256:288], ds[288:], cfg, out_dir=out, model_name="tiny")
    res = tr.fit()
    assert not torch.distributed.is_initialized()  # the trainer tore its process group down
    with open(os.path.join(out, f"writes_rank{rank}.json"), "w") as f:
        json.dump({"writes": writes, "world_size": tr.info.world_size, "res": res}, f)
    if rank == 0:
        torch.save({"model": tr.module.state_dict(), "ema": tr.ema.module.state_dict(),
                    "history": tr.history}, os.path.join(out, "final.pt"))
""" % GLOBAL_BATCH)


@pytest.mark.slow  # ~10-15 s on 2 idle cores (three Python start-ups); more under load
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_processes_match_single_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", str(script), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # meanwhile: the single-process reference with the same global batch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = synthetic_dataset(320, seed=0)
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, lr=3e-3, target_index=0, quiet=True,
                          checkpoint_every=0, plots=False)
        ref = Trainer(TinyModel(), ds[:256], ds[256:288], ds[288:], cfg, out_dir=None, model_name="tiny")
        ref_res = ref.fit()
    finally:
        torch.set_num_threads(n)

    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout.decode()[-4000:]
    w0 = json.loads((out / "writes_rank0.json").read_text())
    w1 = json.loads((out / "writes_rank1.json").read_text())
    assert w0["world_size"] == 2 and w1["world_size"] == 2
    assert "save_checkpoint" in w0["writes"] and "write_metrics" in w0["writes"]
    assert w1["writes"] == []  # only rank 0 writes files
    assert w0["res"]["steps"] == ref_res["steps"] == 2 * 256 // GLOBAL_BATCH
    got = torch.load(out / "final.pt", weights_only=True)
    # Not bit-identical: DDP averages the two per-rank mean gradients with an all-reduce, which
    # sums in a different order than one process summing over the whole batch, so results agree
    # to float32 rounding (~1e-7 relative), amplified slightly over the steps; hence a tight allclose.
    for k, v in ref.module.state_dict().items():
        torch.testing.assert_close(got["model"][k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["ema"][k], ref.ema.module.state_dict()[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(got["history"], ref.history):
        assert a["val_mae"] == pytest.approx(b["val_mae"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert w0["res"]["test_mae"] == pytest.approx(ref_res["test_mae"], rel=1e-5)
    assert w1["res"]["test_mae"] == w0["res"]["test_mae"]  # all ranks agree on the metrics
