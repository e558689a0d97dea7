"""``pamnet-fast`` CLI on a 300-molecule QM9 subset with the tiny test model."""
import csv
import importlib.util
import json

import pytest
import torch

from pamnet_fast import cli

pytest.importorskip("rdkit")
if importlib.util.find_spec("qm9pack") is None:
    pytest.skip("qm9pack is not installed", allow_module_level=True)


# tiny tensors: intra-op threads only add overhead (and spin under load)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    out = base / "run"
    common = ["--cache-dir", str(base / "cache"), "--limit", "300"]
    rc = cli.main(["train", "--model", "tiny", "--target", "U0", "--epochs", "10", "--batch-size", "16",
                   "--lr", "1e-2", "--out", str(out), "--quiet", "--num-threads", "1"] + common)
    assert rc == 0
    return out, common


def test_train_outputs_and_summary(run, capsys):
    out, common = run
    res = json.loads((out / "results.json").read_text())[0]
    assert res["stop_reason"] == "epochs" and res["epochs"] == 10 and res["target"] == "U0"
    assert res["unit"] == "meV" and res["test_n"] == 25  # 300 * 10831 / 130831
    assert res["test_mae"] < 0.5 * res["test_mae_train_mean"]  # much better than predicting the mean
    for f in ("checkpoint.pt", "model.pt", "metrics.csv", "learning_curves.png", "parity_test.png"):
        assert (out / f).exists(), f


def test_evaluate_matches_training_result(run, capsys):
    out, common = run
    assert cli.main(["evaluate", str(out)] + common) == 0
    line = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())[0]
    mae = float(line.split("MAE:")[1].split()[0])
    assert mae == pytest.approx(res["test_mae"], rel=1e-5)
    assert "meV" in line and "n=25" in line


def test_predict_split_and_xyz(run, tmp_path, capsys):
    out, common = run
    assert cli.main(["predict", str(out), "--split", "val"] + common) == 0
    rows = list(csv.DictReader(open(out / "predictions_val.csv")))
    assert len(rows) == 23 and {"qm9_index", "smiles", "true_U0", "pred_U0"} <= set(rows[0])
    xyz = tmp_path / "mols.xyz"
    xyz.write_text("5\nmethane\nC 0 0 0\nH 0.63 0.63 0.63\nH -0.63 -0.63 0.63\nH -0.63 0.63 -0.63\n"
                   "H 0.63 -0.63 -0.63\n3\nwater\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n")
    assert cli.main(["predict", str(out), "--input", str(xyz), "--output", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["name"] for r in rows] == ["methane", "water"]
    assert all(float(r["pred_U0"]) < 0 for r in rows)  # atomization energies are negative


def test_max_time_and_resume(run, tmp_path, capsys):
    out, common = run
    o2 = tmp_path / "budget"
    assert cli.main(["train", "--model", "tiny", "--max-time", "0.5s", "--batch-size", "4", "--out", str(o2),
                     "--quiet", "--train-size", "252"] + common) == 0
    res = json.loads((o2 / "results.json").read_text())[0]
    assert res["stop_reason"] == "max_time" and res["test_n"] == 25
    # resuming a finished run with the same settings is a no-op that reports the stored results
    assert cli.main(["train", "--model", "tiny", "--epochs", "10", "--batch-size", "16", "--lr", "1e-2",
                     "--out", str(out), "--resume"] + common) == 0
    assert "test MAE" in capsys.readouterr().out


def test_unknown_names_list_valid_ones(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--target", "energy"])
    err = capsys.readouterr().err
    assert "mu" in err and "U0" in err and "cv" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "painn"])
    assert "valid models: pamnet, pamnet-s, schnet, dimenet++" in capsys.readouterr().err


def test_parse_duration_and_registry():
    assert cli.parse_duration("600") == 600 and cli.parse_duration("10m") == 600
    assert cli.parse_duration("1.5h") == 5400 and cli.parse_duration("30s") == 30
    with pytest.raises(ValueError, match="valid models: pamnet, pamnet-s, schnet, dimenet\\+\\+"):
        cli.build_model("painn")
    m = cli.build_model("tiny", {"hidden": 8, "out_dim": 1, "max_z": 10})
    assert m.config.hidden == 8


def test_data_command_reports_bond_check(run, capsys):
    out, common = run
    assert cli.main(["data"] + common) == 0
    text = capsys.readouterr().out
    assert "QM9: 300 molecules" in text and "disagree with SMILES on 0" in text


# ---------------------------------------------------------------- baselines (PyG models on our ops)
TINY_BASELINES = {
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 1, "num_gaussians": 10},
    "dimenet++": {"hidden_channels": 16, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
                  "out_emb_channels": 16, "num_spherical": 2, "num_radial": 2},
}


def test_baseline_names_map_to_paper_configs():
    assert cli.default_model_config("dimenet++") == {
        "hidden_channels": 128, "out_channels": 1, "num_blocks": 4, "int_emb_size": 64, "basis_emb_size": 8,
        "out_emb_channels": 256, "num_spherical": 7, "num_radial": 6, "cutoff": 5.0, "envelope_exponent": 5,
        "num_before_skip": 1, "num_after_skip": 2, "num_output_layers": 3}
    m = cli.build_model("schnet")  # cheap to build, unlike DimeNet++ (sympy)
    assert type(m).__name__ == "SchNetBaseline"
    assert (m.net.hidden_channels, m.net.num_filters, m.net.num_interactions, m.net.num_gaussians,
            m.net.cutoff) == (128, 128, 6, 50, 10.0)


@pytest.mark.parametrize("name", TINY_BASELINES)
def test_baseline_train_evaluate_predict(run, tmp_path, capsys, monkeypatch, name):
    _, common = run
    monkeypatch.setenv("PAMNET_FAST_CACHE", str(tmp_path / "cache"))  # DimeNet's sympy cache
    out = tmp_path / name
    overrides = json.dumps(TINY_BASELINES[name])
    train = ["train", "--model", name, "--model-config", overrides, "--epochs", "1", "--batch-size", "32",
             "--train-size", "64", "--out", str(out), "--quiet"] + common
    assert cli.main(train) == 0
    res = json.loads((out / "results.json").read_text())[0]
    assert res["steps"] == 2 and res["test_n"] == 25 and res["test_mae"] == res["test_mae"]  # not NaN
    model, st, _ = cli.load_trained(str(out))
    assert st["model_name"] == name
    assert st["model_config"] == {**cli.default_model_config(name), **TINY_BASELINES[name]}
    assert model.config.to_dict() == st["model_config"]
    capsys.readouterr()

    assert cli.main(["evaluate", str(out)] + common) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{name} U0 test MAE")
    assert float(line.split("MAE:")[1].split()[0]) == pytest.approx(res["test_mae"], rel=1e-5)

    assert cli.main(["predict", str(out)] + common) == 0
    pred = [float(r["pred_U0"]) for r in csv.DictReader(open(out / "predictions_test.csv"))]
    assert len(pred) == 25 and len(set(pred)) > 1  # trained: depends on the molecule

    # the stored config is checked on resume
    bigger = json.dumps({**TINY_BASELINES[name], "hidden_channels": 24})
    from pamnet_fast.train.checkpoint import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match="hidden_channels"):
        cli.main(train[:4] + [bigger] + train[5:] + ["--resume"])
