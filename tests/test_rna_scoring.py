"""RNA scoring task: decoy generator, leave-puzzles-out splits, ranking metrics, `pamnet-fast score`."""
import csv
import math

import numpy as np
import pytest
import torch

from pamnet_fast.data.rna_decoys import (RNADecoys, leave_puzzles_out, make_decoys, nucleotide_units,
                                         puzzle_of, target_rmsds)
from pamnet_fast.data.structures import kabsch, read_tu_structures
from pamnet_fast.train.ranking import puzzle_ranking, random_ranking_metrics, ranking_metrics


# tiny tensors: intra-op threads only add overhead (and spin under load)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def natives(shared_data):
    return read_tu_structures(str(shared_data / "rna_puzzles_native"))


@pytest.fixture(scope="module")
def puzzle13(natives):
    return [s for s in natives if "puzzle_13_" in s.name][0]


# ----------------------------------------------------------------------------- ranking metrics
def test_puzzle_ranking_hand_computed():
    rmsd = [5.0, 1.0, 8.0, 1.5, 9.0, 12.0]
    score = [3.0, 4.0, 1.0, 2.0, 5.0, 6.0]  # order by score: 8.0, 1.5, 5.0, 1.0, 9.0, 12.0
    r = puzzle_ranking(score, rmsd)
    assert r["best_near_native"] == 0.0 and r["rank"] == 2.0 and r["n_near_native"] == 2
    assert r["top_near_native"] == 1.0 and puzzle_ranking(score, rmsd, top=1)["top_near_native"] == 0.0
    perfect = puzzle_ranking(rmsd, rmsd)
    assert perfect["best_near_native"] == 1.0 and perfect["rank"] == 1.0 and perfect["spearman"] == 1.0
    none = puzzle_ranking(score, [3.0] * 6)
    assert math.isnan(none["rank"]) and none["top_near_native"] == 0.0
    m = ranking_metrics({"a": (score, rmsd), "b": (rmsd, rmsd), "c": (score, [3.0] * 6)})
    assert m["frac_best_near_native"] == pytest.approx(1 / 3) and m["frac_top10_near_native"] == pytest.approx(2 / 3)
    assert m["geo_mean_rank"] == pytest.approx(math.sqrt(2.0))  # ranks 2 and 1; c has no near-native
    with pytest.raises(ValueError, match="as many scores"):
        puzzle_ranking([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        puzzle_ranking([1.0, float("nan")], [1.0, 2.0])


def test_random_ranking_matches_simulation():
    rng = np.random.default_rng(0)
    rmsd = np.concatenate([rng.uniform(0.5, 2, 3), rng.uniform(2, 20, 27)])
    exact = random_ranking_metrics({"p": rmsd})
    nn = rmsd[np.argsort(rng.random((20000, 30)), axis=1)] < 2.0  # 20,000 random orders
    first = nn.argmax(axis=1) + 1
    assert exact["frac_best_near_native"] == pytest.approx(0.1)
    assert exact["frac_top10_near_native"] == pytest.approx(1 - math.comb(27, 10) / math.comb(30, 10))
    assert nn[:, :10].any(1).mean() == pytest.approx(exact["frac_top10_near_native"], abs=0.02)
    assert nn[:, 0].mean() == pytest.approx(0.1, abs=0.01)
    assert np.exp(np.log(first).mean()) == pytest.approx(exact["geo_mean_rank"], rel=0.03)


# ----------------------------------------------------------------------------- decoy generator
def test_target_rmsds_and_splits():
    t = target_rmsds(40, np.random.default_rng(0))
    assert (t < 2).sum() == 4 and t.min() >= 0.5 and t.max() <= 20
    names = ["rna_puzzle_14_free_x", "rna_puzzle_14_bound_y"] + [f"rna_puzzle_{k}_z" for k in range(1, 13)]
    puzzles = [puzzle_of(n) for n in names]
    assert puzzles[:2] == ["14", "14"]
    sp = leave_puzzles_out(puzzles + ["13"], seed=1)
    groups = [set(v) for v in sp.values()]
    assert set().union(*groups) == set(puzzles + ["13"]) and sum(len(g) for g in groups) == 14
    assert "13" in sp["test"] and len(sp["test"]) == 6 and len(sp["val"]) == 3
    assert leave_puzzles_out(puzzles, seed=1) == leave_puzzles_out(puzzles, seed=1)
    with pytest.raises(ValueError, match="no training puzzles"):
        leave_puzzles_out(["1", "2", "3"], n_test=2, n_val=1, test_always=())


def test_units_are_the_solution_residues(shared_data, puzzle13):
    """Units inferred from geometry alone match the residues of the named solution file exactly."""
    pytest.importorskip("gemmi")
    from pamnet_fast.data.structures import read_rna_structure
    sol = read_rna_structure(shared_data / "rna_decoys" / "rp13" / "13_0_solution_4XW7_rpr.pdb")
    unit, chain, pivot = nucleotide_units(puzzle13.pos)
    residues = [a.residue for a in sol.atoms]
    starts = [0] + [i for i in range(1, len(residues)) if residues[i] != residues[i - 1]]
    assert unit.max() + 1 == len(starts) == 60
    assert [int(unit[s]) for s in starts] == list(range(60))
    assert all(unit[i] == unit[i - 1] for i in range(1, len(unit)) if i not in set(starts))
    # one chain break: the solution lacks residues 46-56 (45 -> 57)
    first = [residues[s] for s in starts]
    breaks = [k for k in range(59) if chain[k + 1] != chain[k]]
    assert breaks == [first.index(45)] and first[breaks[0] + 1] == 57
    assert pivot.shape == (59, 3)


def test_decoys_hit_targets_and_keep_nucleotides_rigid(puzzle13):
    targets = [0.7, 1.5, 3.0, 8.0, 15.0]
    decoys, labels = make_decoys(puzzle13.pos, 0, seed=3, targets=targets)
    x = puzzle13.pos.double().numpy()
    for y, lab, t in zip(decoys, labels, targets):
        assert lab == pytest.approx(kabsch(y, x)[0], rel=1e-12)  # exact label
        assert lab == pytest.approx(t, rel=0.025)
    # every nucleotide moves rigidly: its own RMSD is the local noise only (sigma <= 0.25 A per axis)
    unit, _, _ = nucleotide_units(puzzle13.pos)
    y = decoys[-1]
    per_unit = [kabsch(y[unit == u], x[unit == u])[0] for u in range(unit.max() + 1)]
    assert max(per_unit) < 0.6 < labels[-1]
    d2, l2 = make_decoys(puzzle13.pos, 0, seed=3, targets=targets)
    assert np.array_equal(l2, labels) and all(np.array_equal(a, b) for a, b in zip(d2, decoys))


@pytest.mark.slow
def test_decoy_dataset_cache_and_task(shared_data, tmp_path):
    from pamnet_fast.train.datasets import load_dataset
    root = shared_data / "rna_puzzles_native"
    ds = RNADecoys(str(root), 2, cache_dir=str(tmp_path), verbose=False)
    assert len(ds) == 42 and len(ds.natives) == 21
    item = ds[5]
    assert item.pos.shape == ds.natives[int(ds.native_of[5])].pos.shape and item.y.shape == (1, 1)
    again = RNADecoys(str(root), 2, cache_dir=str(tmp_path), verbose=False)  # from the cache
    assert torch.equal(again.pos, ds.pos) and torch.equal(again.rmsd, ds.rmsd)
    task = load_dataset("rna_decoys", root=str(root), limit=2, cache_dir=str(tmp_path), verbose=False)
    assert task.loss == "smooth_l1" and not task.element_ref and task.target_name == "rmsd"
    seen = {}
    for split in ("train", "val", "test"):
        for k in getattr(task, split).indices:
            seen.setdefault(ds.puzzles[int(ds.native_of[k])], set()).add(split)
    assert all(len(v) == 1 for v in seen.values())  # every puzzle (14 free + bound too) in one split
    assert seen["13"] == {"test"}
    with pytest.raises(ValueError, match="needs --root"):
        load_dataset("rna_decoys", root=None)
    with pytest.raises(ValueError, match="directory"):
        RNADecoys(str(tmp_path / "nope"), 2)


# ----------------------------------------------------------------------------- training + CLI
@pytest.mark.slow
def test_train_rna_decoys_then_score_files(shared_data, tmp_path, capsys):
    pytest.importorskip("gemmi")
    from pamnet_fast import cli
    root = shared_data / "rna_puzzles_native"
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "rna_decoys", "--root", str(root), "--limit", "1", "--epochs", "1",
                   "--batch-size", "4", "--model-config", '{"dim": 8}', "--out", str(out), "--quiet",
                   "--cache-dir", str(tmp_path / "cache"), "--num-threads", "1"])
    assert rc == 0
    import json
    res = json.loads((out / "results.json").read_text())[0]
    assert res["target"] == "rmsd"
    assert torch.load(out / "model.pt", weights_only=False)["train_config"]["loss"] == "smooth_l1"
    rp13 = shared_data / "rna_decoys" / "rp13"
    csv_path = tmp_path / "scores.csv"
    assert cli.main(["score", str(rp13), "--checkpoint", str(out), "--output", str(csv_path), "--quiet"]) == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 13 and {r["chain"] for r in rows} == {"A"}
    assert {int(r["atoms"]) for r in rows} == {1235, 1459} and all(math.isfinite(float(r["score"])) for r in rows)
    # one file, --chain, gzip: the same score as the plain file
    import gzip
    f = rp13 / "DASLAB_Problem13_Rank1.pdb"
    gz = tmp_path / "m.pdb.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    assert cli.main(["score", str(f), str(gz), "--chain", "A", "--checkpoint", str(out), "--output",
                     str(tmp_path / "one.csv"), "--quiet"]) == 0
    one = list(csv.DictReader(open(tmp_path / "one.csv")))
    assert one[0]["score"] == one[1]["score"] == [r for r in rows if r["file"].endswith("Rank1.pdb")][0]["score"]
    # --max-memory streams the global plex: the same score (float32 sums in another order)
    assert cli.main(["score", str(f), "--max-memory", "64MiB", "--checkpoint", str(out), "--output",
                     str(tmp_path / "streamed.csv"), "--quiet"]) == 0
    streamed = list(csv.DictReader(open(tmp_path / "streamed.csv")))
    assert float(streamed[0]["score"]) == pytest.approx(float(one[0]["score"]), rel=1e-5)
    # a bad file is reported and fails the command; the good ones are still written
    bad = tmp_path / "bad.pdb"
    bad.write_text("not a structure\n")
    assert cli.main(["score", str(f), str(bad), "--checkpoint", str(out), "--output",
                     str(tmp_path / "two.csv"), "--quiet"]) == 1
    assert "bad.pdb" in capsys.readouterr().err
    assert len(list(csv.DictReader(open(tmp_path / "two.csv")))) == 1
    capsys.readouterr()
    assert cli.main(["score", str(tmp_path / "cache"), "--checkpoint", str(out), "--quiet"]) == 2
    assert "no structure files" in capsys.readouterr().err
    assert cli.main(["score", str(tmp_path / "missing.pdb"), "--checkpoint", str(out), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["score", str(f), "--chain", "Z", "--checkpoint", str(out), "--output",
                     str(tmp_path / "z.csv"), "--quiet"]) == 1
