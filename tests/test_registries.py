"""Dataset/model registries of the trainer and CLI, and the regression metrics they report."""
import numpy as np
import pytest
import scipy.stats

from pamnet_fast.train import datasets, models
from pamnet_fast.train.metrics import regression_metrics


def test_metrics_match_scipy_and_hand_values():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.3, size=50)
    p[3] = p[7]  # a tie, for Spearman's average ranks
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(np.abs(p - y).mean())
    assert m["rmse"] == pytest.approx(np.sqrt(((p - y) ** 2).mean()))
    assert m["pearson_r"] == pytest.approx(scipy.stats.pearsonr(p, y)[0])
    assert m["spearman_rho"] == pytest.approx(scipy.stats.spearmanr(p, y)[0])
    fit = scipy.stats.linregress(p, y)
    resid = y - (fit.slope * p + fit.intercept)
    assert m["sd"] == pytest.approx(np.sqrt((resid ** 2).sum() / (len(y) - 1)))
    # hand case: predictions exactly linear in the targets -> SD 0, R 1
    h = regression_metrics([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert h["mae"] == pytest.approx(2.0) and h["pearson_r"] == pytest.approx(1.0) and h["sd"] == pytest.approx(0.0)


def test_metrics_degenerate_inputs():
    m = regression_metrics([1.0, 1.0], [2.0, 2.0])
    assert m["mae"] == 1.0 and np.isnan(m["pearson_r"]) and np.isnan(m["sd"])
    assert regression_metrics([], [])["n"] == 0
    with pytest.raises(ValueError, match="3 targets but 2 predictions"):
        regression_metrics([1, 2, 3], [1, 2])


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown dataset 'qm10'; valid datasets: .*qm9"):
        datasets.load_dataset("qm10")
    with pytest.raises(ValueError, match="dataset 'qm9' has no target 'energy'"):
        datasets.load_dataset("qm9", target="energy")
    with pytest.raises(ValueError, match="unknown model 'painn'"):
        models.build_model("painn")
    assert "tiny" not in models.model_names() and "tiny" in models.model_names(public_only=False)


def test_random_split_is_a_seeded_partition():
    a = datasets.random_split(101, seed=3)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(101))
    assert (len(a["train"]), len(a["val"])) == (81, 10)
    assert a == datasets.random_split(101, seed=3) and a != datasets.random_split(101, seed=4)


def test_registered_dataset_round_trips_through_meta():
    from torch.utils.data import TensorDataset
    import torch

    @datasets.register_dataset("toy_test", targets=("a", "b"))
    def load_toy(target=None, split_seed=0, **_):
        full = TensorDataset(torch.arange(20.0))
        tr, va, te = datasets.subsets(full, datasets.random_split(20, split_seed))
        return datasets.TaskData(tr, va, te, target_name=target or "a", full=full)
    try:
        task = datasets.load_dataset("toy_test", target="b", split_seed=5, cache_dir="/nowhere")
        assert task.meta == {"dataset": "toy_test", "target": "b", "split_seed": 5}  # no cache_dir
        again = datasets.load_dataset(**task.meta)
        assert again.test.indices == task.test.indices
        with pytest.raises(ValueError, match="has no target 'c'"):
            datasets.load_dataset("toy_test", target="c")
        with pytest.raises(ValueError, match="unknown split 'dev'"):
            task.split("dev")
    finally:
        datasets.DATASETS.pop("toy_test")
        datasets._TARGETS.pop("toy_test")


@pytest.mark.parametrize("model,dataset,words", [("physchem", "esol", "esol_delaney_si.txt"),
                                                  ("pamnet", "rna_decoys", "RNA-Puzzles natives"),
                                                  ("pamnet", "pdbbind", "licensed")])
def test_cli_missing_root_is_a_clear_error(capsys, model, dataset, words):
    from pamnet_fast import cli
    assert cli.main(["train", "--model", model, "--dataset", dataset, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pamnet-fast: error:") and "--root" in err and words in err
