"""Loading the authors' PAMNet state dicts (their parameter names and shapes)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS, reference_key_map, to_reference_state_dict
from pamnet_fast.nn.compat import reference_layout
from pamnet_fast.nn.reference import reference_forward
from test_nn_common import random_batch, rel_err, rna_structure

# Names and shapes read off the authors' models.py / layers/*.py (dim 16, 2 layers), checked
# independently of reference_layout.
AUTHORS_SAMPLE = {
    "embeddings": (5, 16),
    "init_linear.weight": (16, 18),
    "rbf_g.freq": (16,),
    "rbf_l.freq": (16,),
    "mlp_rbf_g.0.0.weight": (16, 16),
    "mlp_sbf1.0.0.weight": (16, 42),
    "mlp_sbf2.0.0.bias": (16,),
    "global_layer.0.mlp_x1.0.0.weight": (16, 16),
    "global_layer.0.mlp_m.0.0.weight": (16, 48),
    "global_layer.1.W_edge_attr.weight": (16, 16),
    "global_layer.1.res3.mlp.1.0.bias": (16,),
    "global_layer.0.mlp_out.2.0.weight": (16, 16),
    "global_layer.0.W_out.weight": (1, 16),
    "global_layer.0.W": (16, 1),
    "local_layer.0.mlp_m_kj.0.0.weight": (16, 48),
    "local_layer.1.mlp_sbf.1.0.weight": (16, 16),
    "local_layer.1.lin_rbf.weight": (16, 16),
    "local_layer.1.lin_rbf_out.weight": (16, 16),
    "local_layer.0.W": (16, 1),
}


def synthetic_checkpoint(small: bool, dim: int, n_layer: int, seed: int = 0, dtype=torch.float64,
                         rna: bool = False):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen, dtype=dtype) * 0.3
            for k, shape in reference_layout(small, dim, n_layer, rna=rna).items()}


def test_layout_matches_authors_names():
    lay = reference_layout(False, 16, 2)
    for k, shape in AUTHORS_SAMPLE.items():
        assert lay[k] == shape, k
    small = reference_layout(True, 16, 2)
    assert "init_linear.weight" not in small and "mlp_sbf.0.0.weight" in small
    assert "local_layer.0.mlp_m_jj.0.0.weight" in small and "local_layer.0.mlp_m_kj.0.0.weight" not in small
    # 12 model-level tensors, 28 per global layer and 35 per local layer (PAMNet)
    assert len(lay) == 12 + 2 * (28 + 35)
    assert len(small) == 9 + 2 * (28 + 35)


@pytest.mark.parametrize("small,cfg", [
    (False, PAMNetConfig.qm9(dim=16, n_layer=2)),
    (True, PAMNetConfig.qm9(dim=16, n_layer=2)),
    (False, PAMNetConfig.rna(n_layer=2)),
    (False, PAMNetConfig.rna(n_layer=2, reference_compat=True)),
    (False, PAMNetConfig.pdbbind(dim=16, n_layer=2)),
])
def test_key_map_covers_every_parameter(small, cfg):
    model = (PAMNetS if small else PAMNet)(cfg)
    mapping = reference_key_map(model)
    ours = dict(model.named_parameters())
    assert sorted(mapping.values()) == sorted(ours)
    lay = reference_layout(small, cfg.dim, cfg.n_layer, rna=tuple(cfg.atom_types) == (6, 7, 8))
    for theirs, name in mapping.items():
        assert tuple(ours[name].shape) == lay[theirs], theirs


@pytest.mark.parametrize("small", [False, True])
def test_load_synthetic_checkpoint_and_round_trip(small):
    cls = PAMNetS if small else PAMNet
    sd = synthetic_checkpoint(small, 16, 2, seed=3)
    model = cls(PAMNetConfig.qm9(dim=16, n_layer=2, reference_compat=True)).double()
    unused = model.load_reference_state_dict(sd)
    assert unused == ([] if small else ["init_linear.weight"])
    ours = dict(model.named_parameters())
    for theirs, name in reference_key_map(model).items():
        assert torch.equal(ours[name], sd[theirs]), theirs
    back = to_reference_state_dict(model)
    assert list(back) == list(reference_layout(small, 16, 2))
    for k in back:
        if k != "init_linear.weight":
            assert torch.equal(back[k], sd[k]), k
    # a second model loaded from the round trip computes the same function
    twin = cls(PAMNetConfig.qm9(dim=16, n_layer=2, reference_compat=True)).double()
    twin.load_reference_state_dict(back)
    data = random_batch([8, 11], seed=4)
    out = model(data)
    assert torch.equal(out, twin(data)) and out.abs().max() > 0
    assert rel_err(out, reference_forward(model, data)) < 1e-9


def test_load_rejects_bad_checkpoints():
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2))
    sd = synthetic_checkpoint(False, 16, 2, dtype=torch.float32)
    missing = dict(sd)
    del missing["local_layer.1.W"]
    with pytest.raises(KeyError, match="missing"):
        model.load_reference_state_dict(missing)
    extra = dict(sd, **{"global_layer.0.bnorm.weight": torch.ones(1)})
    with pytest.raises(KeyError, match="unexpected"):
        model.load_reference_state_dict(extra)
    assert "global_layer.0.bnorm.weight" in model.load_reference_state_dict(extra, strict=False)
    wrong = dict(sd, **{"global_layer.0.mlp_m.0.0.weight": torch.zeros(16, 32)})
    with pytest.raises(ValueError, match="shape"):
        model.load_reference_state_dict(wrong)
    with pytest.raises(KeyError, match="init_linear"):
        reference_key_map(PAMNetS(PAMNetConfig.pdbbind(dim=16, n_layer=1)))


def test_rna_checkpoint_runs_in_compat_mode():
    """A synthetic stand-in for their save/pamnet_rna.pt (RNA-Puzzles, PAMNet): loads into the rna preset
    with reference_compat=True and matches the plain authors'-style computation."""
    sd = synthetic_checkpoint(False, 16, 1, seed=5, rna=True)
    model = PAMNet(PAMNetConfig.rna(reference_compat=True)).double()
    assert model.load_reference_state_dict(sd) == []
    assert list(to_reference_state_dict(model)) == list(sd)  # their RNA layout: 3 rows, no init_linear
    data = Batch.from_data_list([rna_structure(6, max_atoms=200)])
    out = model(data)
    assert out.shape == (1, 1) and out.abs().max() > 0
    assert rel_err(out, reference_forward(model, data)) < 1e-9
    default = PAMNet(PAMNetConfig.rna(atom_types=(6, 7, 8))).double()
    default.load_reference_state_dict(sd)
    assert rel_err(default(data), out) > 1e-3  # the compat numerics differ from the paper's
