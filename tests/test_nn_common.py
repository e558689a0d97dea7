"""Shared helpers of the tests of pamnet_fast.nn (molecules, real data, comparisons), and their own checks."""
from __future__ import annotations

import math
import pathlib

import pytest
import torch
from torch_geometric.data import Batch, Data

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
QM9_Z = torch.tensor([1, 6, 7, 8, 9])


def random_molecule(n: int, gen: torch.Generator, dtype=torch.float64, bond_cut: float = 1.65) -> Data:
    """Atoms placed one by one at 1.0-1.5 Å from a random earlier atom and >= 0.9 Å from all others
    (a connected, chemistry-like cloud); bonds = pairs closer than ``bond_cut``, both directions,
    in random order."""
    pos = torch.zeros(1, 3, dtype=torch.float64)
    while pos.size(0) < n:
        anchor = pos[torch.randint(pos.size(0), (1,), generator=gen)]
        v = torch.randn(1, 3, generator=gen, dtype=torch.float64)
        cand = anchor + v / v.norm() * (1.0 + 0.5 * torch.rand(1, generator=gen, dtype=torch.float64))
        if torch.cdist(cand, pos).min() >= 0.9:
            pos = torch.cat([pos, cand])
    z = QM9_Z[torch.randint(0, 5, (n,), generator=gen)]
    d = torch.cdist(pos, pos)
    e = ((d < bond_cut) & (d > 0)).nonzero().t()
    e = e[:, torch.randperm(e.size(1), generator=gen)]
    return Data(z=z, pos=pos.to(dtype), edge_index=e)


def random_batch(sizes, seed=0, dtype=torch.float64) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch.from_data_list([random_molecule(n, gen, dtype) for n in sizes])


def qm9_molecules(count: int = 4, min_atoms: int = 14, dtype=torch.float64):
    """Real QM9 molecules from the qm9pack CSVs, bonds by RDKit (pamnet_fast.data); skip if absent."""
    try:
        from pamnet_fast.data.bonds import molecule_bonds
        from pamnet_fast.data.qm9 import qm9pack_data_dir, read_qm9pack
        src = read_qm9pack(qm9pack_data_dir(), limit=400)
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"QM9 (qm9pack / pamnet_fast.data.qm9) not available: {exc}")
    out = []
    for z, pos, smi in zip(src["z"], src["pos"], src["smiles"]):
        if len(z) >= min_atoms:
            e, _ = molecule_bonds(z, pos, smi)
            out.append(Data(z=torch.tensor(z), pos=torch.tensor(pos, dtype=dtype),
                            edge_index=torch.as_tensor(e, dtype=torch.long)))
        if len(out) == count:
            break
    return out


def rna_structure(index: int = 6, dtype=torch.float64, max_atoms=None) -> Data:
    """An RNA-Puzzles native (index 6: puzzle 21, 841 heavy atoms), optionally its first
    ``max_atoms`` atoms (a contiguous stretch of residues), to keep the tests fast."""
    from pamnet_fast.data.structures import read_tu_structures
    d = DATA / "rna_puzzles_native"
    if not d.is_dir():
        pytest.skip(f"real data not found at {d}")
    s = read_tu_structures(str(d))[index]
    n = s.z.numel() if max_atoms is None else min(max_atoms, s.z.numel())
    return Data(z=s.z[:n], pos=s.pos[:n].to(dtype))


def rel_err(a, b) -> float:
    if a is None and b is None:
        return 0.0
    a = torch.zeros_like(b) if a is None else a
    b = torch.zeros_like(a) if b is None else b
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def outputs_and_grads(fn, model, data, seed=0):
    """``fn(model, data)`` and the gradients of a fixed random projection of it w.r.t. every
    parameter and the positions."""
    data = data.clone()
    data.pos = data.pos.detach().clone().requires_grad_(True)
    out = fn(model, data)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad((out * w).sum(), params + [data.pos], allow_unused=True)
    names = [n for n, _ in model.named_parameters()] + ["pos"]
    return out.detach(), dict(zip(names, grads))


def random_rotation(gen, reflect=False, dtype=torch.float64):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dtype))
    return q


def test_random_molecule_is_sane():
    gen = torch.Generator().manual_seed(1)
    m = random_molecule(15, gen)
    d = torch.cdist(m.pos, m.pos) + torch.eye(15) * 10
    assert d.min() >= 0.9 - 1e-12
    assert m.edge_index.size(1) >= 2 * 14 - 4  # roughly connected
    rot = random_rotation(gen, reflect=True)
    assert math.isclose(torch.det(rot).item(), -1.0, abs_tol=1e-12)
    assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=rot.dtype), atol=1e-12)
