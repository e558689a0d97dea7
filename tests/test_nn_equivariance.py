"""Symmetries of the PAMNet models: E(3) invariance of scalar outputs, equivariance of the dipole head,
permutation invariance, and batch independence."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
from test_nn_common import random_batch, random_molecule, random_rotation, rel_err, rna_structure

MODELS = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}


def moved(data, rot=None, shift=None):
    d = data.clone()
    pos = d.pos
    if rot is not None:
        pos = pos @ rot.T
    if shift is not None:
        pos = pos + shift
    d.pos = pos
    return d


def model_of(name, compat, **kw):
    torch.manual_seed(11)
    return MODELS[name](PAMNetConfig.qm9(dim=24, n_layer=2, reference_compat=compat, **kw)).double()


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_e3_invariance(name, compat):
    gen = torch.Generator().manual_seed(12)
    model = model_of(name, compat)
    data = random_batch([10, 13, 7], seed=12)
    ref = model(data)
    assert ref.abs().min() > 0
    for reflect in (False, True):
        rot = random_rotation(gen, reflect=reflect)
        shift = torch.randn(3, generator=gen, dtype=torch.float64) * 5
        assert rel_err(model(moved(data, rot, shift)), ref) < 1e-10
    assert rel_err(model(moved(data, shift=torch.tensor([100.0, -50.0, 3.0], dtype=torch.float64))),
                   ref) < 1e-10
    # a non-rigid deformation changes the output (the test can fail)
    bent = data.clone()
    bent.pos = data.pos + 0.05 * torch.randn(data.pos.shape, generator=gen, dtype=torch.float64)
    assert rel_err(model(bent), ref) > 1e-4


def test_e3_invariance_rna_knn():
    gen = torch.Generator().manual_seed(13)
    data = Batch.from_data_list([rna_structure(6, max_atoms=260)])
    for compat in (False, True):
        torch.manual_seed(13)
        model = PAMNet(PAMNetConfig.rna(reference_compat=compat, n_layer=2)).double()
        ref = model(data)
        rot = random_rotation(gen, reflect=compat)
        out = model(moved(data, rot, torch.tensor([3.0, -7.0, 20.0], dtype=torch.float64)))
        assert rel_err(out, ref) < 1e-10


def permuted_within_graphs(data, gen):
    """Permute the atoms inside each molecule (batch stays sorted), relabel and shuffle the bonds."""
    perm = torch.cat([torch.nonzero(data.batch == g).view(-1)[torch.randperm(int((data.batch == g).sum()),
                                                                            generator=gen)]
                      for g in range(data.num_graphs)])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    d = data.clone()
    d.z, d.pos, d.batch = data.z[perm], data.pos[perm], data.batch[perm]
    e = inv[data.edge_index]
    d.edge_index = e[:, torch.randperm(e.size(1), generator=gen)]
    return d


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_permutation_invariance(name, compat):
    gen = torch.Generator().manual_seed(14)
    model = model_of(name, compat)
    data = random_batch([11, 8, 12], seed=14)
    ref = model(data)
    out = model(permuted_within_graphs(data, gen))
    assert rel_err(out, ref) < 1e-10
    assert not torch.equal(permuted_within_graphs(data, gen).pos, data.pos)


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_molecule_alone_or_in_batch(name):
    gen = torch.Generator().manual_seed(15)
    model = model_of(name, False)
    mols = [random_molecule(n, gen) for n in (9, 14, 6, 11)]
    together = model(Batch.from_data_list(mols))
    for k, m in enumerate(mols):
        alone = model(Batch.from_data_list([m]))
        assert torch.allclose(alone[0], together[k], rtol=1e-12, atol=1e-13)
    # rigidly moving one molecule of the batch leaves the others untouched (graphs never interact)
    moved_mols = list(mols)
    moved_mols[1] = moved(mols[1], random_rotation(gen), torch.tensor([0.5, 0.2, -0.1], dtype=torch.float64))
    again = model(Batch.from_data_list(moved_mols))
    assert torch.allclose(again, together, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("charges", [True, False])
def test_dipole_equivariance(charges):
    gen = torch.Generator().manual_seed(16)
    model = model_of("PAMNet", False, target="mu", dipole_charges=charges)
    data = random_batch([10, 12], seed=16)
    mu = model.dipole(data)
    assert mu.shape == (2, 3) and mu.norm(dim=-1).min() > 1e-6
    for reflect in (False, True):
        rot = random_rotation(gen, reflect=reflect)
        shift = torch.randn(3, generator=gen, dtype=torch.float64) * 10
        mu_r = model.dipole(moved(data, rot, shift))
        assert rel_err(mu_r, mu @ rot.T) < 1e-10
        assert rel_err(model(moved(data, rot, shift)), mu.norm(dim=-1, keepdim=True)) < 1e-10
    # translation only: identical vector
    assert rel_err(model.dipole(moved(data, shift=torch.tensor([7.0, 8.0, -9.0], dtype=torch.float64))),
                   mu) < 1e-10
    # the vector is not invariant: a rotation does change it
    rot = random_rotation(gen)
    assert rel_err(model.dipole(moved(data, rot)), mu) > 1e-3
