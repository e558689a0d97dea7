"""SchNet / DimeNet++ baselines: PyG's models on our ops behind the PAMNet interface."""
import pytest
import torch
from torch_geometric.data import Batch

import pamnet_fast.pyg as ppyg
from pamnet_fast.nn import baselines as bl
from pamnet_fast.nn import DimeNetPlusPlusBaseline, DimeNetPlusPlusConfig, SchNetBaseline, SchNetConfig
from pamnet_fast.train.tiny import synthetic_dataset

SMALL = {
    SchNetBaseline: SchNetConfig(hidden_channels=16, num_filters=16, num_interactions=1, num_gaussians=10),
    DimeNetPlusPlusBaseline: DimeNetPlusPlusConfig(hidden_channels=16, num_blocks=1, int_emb_size=8,
                                                   basis_emb_size=4, out_emb_channels=16, num_spherical=2,
                                                   num_radial=2),
}


@pytest.fixture(autouse=True)
def sympy_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAMNET_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bl, "_sympy_memo", {})
    was = ppyg.is_accelerated()
    yield tmp_path / "cache" / "dimenet"
    if not was:  # constructing a baseline accelerates PyG globally
        ppyg.deaccelerate()


def _build(cls):
    torch.manual_seed(0)
    m = cls(SMALL[cls])
    with torch.no_grad():  # DimeNet++'s output layers start at zero: make the output depend on the input
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("cls", SMALL)
def test_shapes_batch_none_and_order(cls):
    m = _build(cls)
    data = synthetic_dataset(6, seed=1)
    out = m(Batch.from_data_list(data))
    assert out.shape == (6, 1) and torch.isfinite(out).all() and out.std() > 0
    single = m(data[2])  # a Data without ``batch``
    assert single.shape == (1, 1)
    torch.testing.assert_close(single[0], out[2], rtol=1e-5, atol=1e-5)
    # invariant to a rotation and to atom order
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    d = data[2].clone()
    perm = torch.randperm(d.z.numel())
    d.z, d.pos = d.z[perm], (d.pos.double() @ q.T).float()[perm]
    torch.testing.assert_close(m(d), single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", SMALL)
def test_config_round_trip_and_defaults(cls):
    cfg = SMALL[cls]
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        type(cfg).from_dict({**cfg.to_dict(), "dim": 3})
    m = _build(cls)
    m2 = cls(type(cfg).from_dict(m.config.to_dict()))
    m2.load_state_dict(m.state_dict())  # same architecture from the stored config
    assert SchNetConfig() == SchNetConfig(128, 128, 6, 50, 10.0)
    d = DimeNetPlusPlusConfig()
    assert (d.hidden_channels, d.out_emb_channels, d.int_emb_size, d.basis_emb_size, d.num_blocks,
            d.num_spherical, d.num_radial, d.cutoff, d.envelope_exponent) == (128, 256, 64, 8, 4, 7, 6, 5.0, 5)


def test_construction_keeps_accelerate_options():
    with ppyg.accelerated(reference=True):
        SchNetBaseline(SMALL[SchNetBaseline])
        assert ppyg._state["reference"] is True  # not reset to the defaults
    SchNetBaseline(SMALL[SchNetBaseline])
    assert ppyg.is_accelerated()


def test_dimenet_sympy_cache(sympy_cache, monkeypatch):
    from torch_geometric.nn.models import dimenet_utils as du
    original = du.bessel_basis, du.real_sph_harm
    a = _build(DimeNetPlusPlusBaseline)
    assert (du.bessel_basis, du.real_sph_harm) == original  # PyG restored after construction
    assert len(list(sympy_cache.glob("bessel_basis_2_2_*.pkl"))) == 1
    assert len(list(sympy_cache.glob("real_sph_harm_2_*.pkl"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cached expressions should have been used")
    monkeypatch.setattr(bl, "_sympy_memo", {})  # a new process: only the disk cache
    monkeypatch.setattr(du, "bessel_basis", fail)
    monkeypatch.setattr(du, "real_sph_harm", fail)
    b = _build(DimeNetPlusPlusBaseline)
    batch = Batch.from_data_list(synthetic_dataset(4))
    torch.testing.assert_close(a(batch), b(batch), rtol=0, atol=0)
