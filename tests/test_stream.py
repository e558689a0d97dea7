"""Streamed global plex (pamnet_fast.nn.stream): exact block neighbors, same outputs and gradients as the
unstreamed model (float64), budget parsing and errors."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from pamnet_fast import ops
from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
from pamnet_fast.nn.block_neighbors import BlockNeighbors, squared_threshold
from pamnet_fast.nn.stream import parse_memory

from test_nn_common import DATA, random_batch


def _rna_like(n: int, box: float, seed: int, dtype=torch.float64, grid: bool = True) -> Data:
    """Random C/N/O cloud; ``grid``: coordinates on a 0.1 Å grid (many pairs exactly at the cutoffs)."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=gen, dtype=torch.float64) * box
    pos = (pos.round(decimals=1) if grid else pos).to(dtype)
    z = torch.tensor([6, 7, 8])[torch.randint(0, 3, (n,), generator=gen)]
    return Data(pos=pos, z=z)


def _block_edges(nb: BlockNeighbors, n: int, step: int) -> torch.Tensor:
    srcs, dsts = [], []
    for t0 in range(0, n, step):
        t1 = min(n, t0 + step)
        src, ptr, dist = nb.edges(t0, t1)
        assert ptr[0] == 0 and ptr[-1] == src.numel() == dist.numel()
        dsts.append(torch.repeat_interleave(torch.arange(t0, t1), ptr[1:] - ptr[:-1]))
        srcs.append(src)
    return torch.stack([torch.cat(srcs), torch.cat(dsts)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [None, 7])
def test_block_neighbors_match_radius_and_knn_graph(dtype, k):
    gen = torch.Generator().manual_seed(1)
    n, r = 600, 2.0
    pos = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 11).round(decimals=1).to(dtype)
    batch = torch.sort(torch.randint(0, 3, (n,), generator=gen)).values
    if k is None:
        ref, ptr = ops.radius_graph(pos, r, batch, return_ptr=True)
    else:
        ref, ptr = ops.knn_graph(pos, k, batch, r=r, return_ptr=True)
    nb = BlockNeighbors(pos, r, batch, k=k)
    assert torch.equal(_block_edges(nb, n, 97), ref)
    assert torch.equal(nb.counts(block=128), ptr[1:] - ptr[:-1])
    src, ptr_b, dist = nb.edges(100, 180)
    assert torch.equal(dist, ops.reference.pair_distance(pos[ref[1]], pos[ref[0]])[
        (ref[1] >= 100) & (ref[1] < 180)])


def test_block_neighbors_threshold_is_exact():
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor(squared_threshold(2.6, dtype), dtype=dtype)
        r = torch.tensor(2.6, dtype=dtype)
        above = torch.nextafter(t, torch.tensor(float("inf"), dtype=dtype))
        assert ops.reference.correctly_rounded_sqrt(t.view(1)) <= r
        assert ops.reference.correctly_rounded_sqrt(above.view(1)) > r


def test_block_neighbors_errors():
    pos = torch.rand(50, 3)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        BlockNeighbors(pos, 5.0, max_num_neighbors=3).counts()
    with pytest.raises(ValueError, match="non-finite"):
        BlockNeighbors(torch.full((4, 3), float("nan")), 1.0)
    with pytest.raises(ValueError, match="sorted"):
        BlockNeighbors(pos, 1.0, torch.tensor([1, 0] * 25))


@pytest.mark.slow
def test_block_neighbors_real_rna(shared_data):
    from pamnet_fast.data.structures import read_tu_structures
    pos = read_tu_structures(str(shared_data / "rna_puzzles_native"))[18].pos  # Puzzle 5, 3,823 atoms
    ref = ops.radius_graph(pos, 20.0)
    assert torch.equal(_block_edges(BlockNeighbors(pos, 20.0), pos.size(0), 1000), ref)


CASES = [(PAMNet, False), (PAMNet, True), (PAMNetS, False), (PAMNetS, True)]


def _models(cls, knn, n_layer=1, **kw):
    torch.manual_seed(0)
    cfg = PAMNetConfig.rna(knn=knn, dim=8, n_layer=n_layer, cutoff_g=5.0, knn_k=12, **kw)
    return cls(cfg).double()


def _rel(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("cls,knn", CASES)
@pytest.mark.parametrize("batched", [False, True])
def test_streamed_forward_matches_unstreamed(cls, knn, batched):
    data = (Batch.from_data_list([_rna_like(100, 10, 1), _rna_like(60, 8, 2), _rna_like(3, 2, 3)])
            if batched else _rna_like(150, 11, 4))
    model = _models(cls, knn, n_layer=2 if batched else 1)
    with torch.no_grad():
        ref = model(data)
        with model.stream("1GiB", block_items=600):
            out = model(data)
        plan = model.last_stream_plan
    assert len(plan.global_blocks) >= 3 and len(plan.local_blocks) > 1
    assert _rel(out, ref) <= 1e-10


def test_streamed_qm9_preset_bonds():
    """The QM9 preset (bonds local plex, 5 Å radius global plex, 6 layers, sum readout)."""
    data = random_batch([9, 14, 11], seed=3)
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=16)).double()
    with torch.no_grad():
        ref = model(data)
        with model.stream("1GiB", block_items=50):
            out = model(data)
    assert _rel(out, ref) <= 1e-10


@pytest.mark.parametrize("cls,knn", [(PAMNet, False), (PAMNetS, True)])
def test_streamed_gradients_match(cls, knn):
    """Training path (blocks recomputed in backward): parameter and position gradients."""
    # off-grid: coincident atoms would make the position gradient NaN in both paths
    data = Batch.from_data_list([_rna_like(80, 9, 5, grid=False), _rna_like(50, 7, 6, grid=False)])
    grads = []
    for streamed in (False, True):
        model = _models(cls, knn)
        pos = data.pos.clone().requires_grad_(True)
        d = data.clone()
        d.pos = pos
        if streamed:
            with model.stream("1GiB", block_items=500):
                y = model(d)
            assert len(model.last_stream_plan.global_blocks) > 3
        else:
            y = model(d)
        (y ** 2).sum().backward()
        grads.append([pos.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert _rel(b, a) <= 1e-10


def test_parse_memory():
    assert parse_memory("2GiB") == parse_memory("2G") == 2 * 2**30
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5g") == int(1.5 * 2**30)
    assert parse_memory(1000) == 1000
    for bad in ("two gigs", "-1G", "0", "5Q", True):
        with pytest.raises(ValueError, match="max_memory"):
            parse_memory(bad)


def test_budget_errors():
    data = _rna_like(200, 12, 7)
    model = _models(PAMNet, False)
    with pytest.raises(ValueError, match="too small for this input"):
        with model.stream("100KiB"):
            model(data)
    assert model.max_memory is None  # the context restored it
    compat = PAMNet(PAMNetConfig.rna(knn=True, dim=8, reference_compat=True))
    with pytest.raises(ValueError, match="reference_compat"):
        compat.max_memory = "1GiB"
    dipole = PAMNet(PAMNetConfig.qm9(dim=8, target="mu"))
    with pytest.raises(ValueError, match="dipole"):
        dipole.max_memory = "1GiB"


def test_cli_max_memory():
    from pamnet_fast.cli import apply_max_memory, make_parser
    from pamnet_fast.nn import SchNetBaseline
    args = make_parser().parse_args(["evaluate", "run_dir", "--max-memory", "3GiB"])
    model = _models(PAMNet, False)
    apply_max_memory(model, args.max_memory)
    assert model.max_memory == 3 * 2**30
    with pytest.raises(SystemExit, match="--max-memory"):
        apply_max_memory(model, "lots")
    with pytest.raises(SystemExit, match="no streamed path"):
        apply_max_memory(SchNetBaseline(), "1GiB")
