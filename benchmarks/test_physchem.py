"""PhysChem benchmark (issue 15): ours vs a dense re-implementation in the authors' formulation.

Cases: a QM9 batch of 128 molecules and a batch of 32 drug-like molecules (the first Lipophilicity
molecules), inference and train step (forward, property loss + lambda * Conn-3 loss, backward), the
two implementations on the same weights (:class:`pamnet_fast.nn.physchem.reference.DensePhysChem`,
batch-global dense incidence/adjacency/force matrices and the authors' dense Conn-k loss, is the
``baseline``). Peak memory of one call is measured in a separate process (``_data.peak_memory``).
"""
from __future__ import annotations

import pytest
import torch

import _data

HERE = __file__
MODELS = ["PhysChem", "PhysChem (dense, authors' formulation)"]
MODES = ["inference", "train"]


def _batch(dataset: str, batch_size: int):
    """A seeded random sample: QM9 from its first 20,000 molecules (2,000 in quick mode; QM9 is
    ordered by size, so its first molecules are small), Lipophilicity from all 4,200 (64 in quick
    mode). The full sets are featurized and embedded once (QM9 20k: ~5 min, Lipophilicity: ~10 min)."""
    from torch_geometric.data import Batch
    if dataset == "qm9":
        from pamnet_fast.data.molgraphs import qm9_graphs
        try:
            ds = qm9_graphs(limit=2000 if _data.quick() else 20000, verbose=False)
        except (ImportError, FileNotFoundError) as exc:
            pytest.skip(f"QM9 unavailable: {exc}")
    else:
        from pamnet_fast.data.moleculenet import moleculenet_dataset
        root = _data.require_data("moleculenet")
        ds = moleculenet_dataset("lipop", root, limit=64 if _data.quick() else None, verbose=False)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:batch_size]
    return Batch.from_data_list([ds[int(i)] for i in idx])


def _config(dataset: str):
    from pamnet_fast.nn.physchem import PhysChemConfig
    cfg = PhysChemConfig.preset(dataset, dropout=0.0)
    if _data.quick():
        from dataclasses import replace
        cfg = replace(cfg, hv_dim=32, he_dim=32, mv_dim=32, me_dim=32, hm_dim=32, mm_dim=32)
    return cfg


def _sizes():
    return {"qm9": 8, "lipop": 8} if _data.quick() else {"qm9": 128, "lipop": 32}


def build_physchem_case(dataset: str, model_name: str, mode: str, batch_size: int) -> _data.Case:
    from pamnet_fast.nn.physchem import PhysChem
    from pamnet_fast.nn.physchem.reference import DensePhysChem, dense_conn_loss
    torch.manual_seed(0)
    batch = _batch(dataset, batch_size)
    model = PhysChem(_config(dataset))
    dense = model_name != MODELS[0]
    lam = model.config.lam

    def forward():
        if dense:
            twin = DensePhysChem(model)
            return twin(batch), twin.conformations
        return model(batch), model.conformations

    if mode == "inference":
        model.eval()

        def run():
            with torch.no_grad():
                return forward()[0]
        return _data.Case(run)

    model.train()

    def run():
        out, confs = forward()
        if dense:
            aux = lam * dense_conn_loss(confs, batch.pos, batch.edge_index, batch.batch)
        else:
            aux = model.auxiliary_loss()
        loss = torch.nn.functional.mse_loss(out, batch.y) + aux
        loss.backward()
        return loss

    def reset():
        model.zero_grad(set_to_none=True)
    return _data.Case(run, reset)


def _params():
    return [pytest.param(ds, m, mode, id=f"{mode}-{ds}-{m.split(' ')[0]}{'-dense' if m != MODELS[0] else ''}")
            for ds in ("qm9", "lipop") for mode in MODES for m in MODELS]


@pytest.mark.parametrize("dataset,model_name,mode", _params())
def test_physchem(benchmark, dataset, model_name, mode):
    pytest.importorskip("rdkit")
    bs = _sizes()[dataset]
    case = build_physchem_case(dataset, model_name, mode, bs)
    batch = _batch(dataset, bs)
    benchmark.group = f"PhysChem {dataset} batch {bs}: {'inference' if mode == 'inference' else 'train step'}"
    benchmark.extra_info.update(model=model_name, dataset=dataset, batch_size=bs, mode=mode,
                                baseline=model_name != MODELS[0], atoms=int(batch.num_nodes),
                                bonds=int(batch.edge_index.shape[1] // 2), threads=torch.get_num_threads())
    _data.attach_memory(benchmark, _data.peak_memory(
        HERE, "build_physchem_case", dict(dataset=dataset, model_name=model_name, mode=mode, batch_size=bs)))
    benchmark.pedantic(case.run, setup=case.reset, **_data.rounds(5))
