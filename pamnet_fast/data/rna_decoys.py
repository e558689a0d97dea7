r"""Synthetic RNA decoys with exact RMSD labels: a substitute for FARFAR2, not FARFAR2.

PAMNet's RNA-Puzzles scorer (Townshend et al.'s ARES setting) is trained on FARFAR2 decoys, which are
not available here. This generator perturbs a native structure instead, so that a scoring function can
be trained and evaluated on models over a controlled RMSD range. The natives (TU format) carry only
coordinates and C/N/O labels, so the residue structure is inferred from geometry:

* **Units** (nucleotides): connected components of the covalent graph (heavy atoms within 1.9 Å). The
  natives have no P, so the phosphate is the only break between consecutive nucleotides and each
  component is one nucleotide from O5' to the base; the isolated OP1/OP2 atoms (and any other component
  of ≤ 2 atoms) join the next unit in file order, as in the PDB residue.
* **Chain breaks**: consecutive units whose closest atoms are farther than 3.5 Å apart (across the
  missing P, O3'(i)–O5'/OP(i+1) are ~2.6 Å apart).
* **Moves**, all scaled by one factor ``λ``: *hinge moves* (backbone torsion changes at the phosphate):
  the shorter side of a chain, cut at a unit boundary, rotates about a random axis through the
  phosphate position (midpoint of the closest atom pair across the boundary) by ``λ · g · 15°``;
  *segment moves* (rigid-body moves of helices / segments): a run of 2–12 consecutive units rotates
  about its centroid by ``λ · g · 10°`` and translates by ``λ · g · 1 Å``; *local noise*: Gaussian
  per-atom displacements of σ ∈ [0.05, 0.25] Å (not scaled).
* **RMSD control**: a target RMSD is drawn (a fraction ``near_native_fraction`` uniformly in
  [``rmsd_min``, 2 Å), the rest log-uniformly in [2 Å, ``rmsd_max``]); ``λ`` is found by bisection
  on the Kabsch RMSD to the native (continuous in ``λ``, so the bracket always holds a solution), and
  the label is the exact RMSD of the final decoy (:func:`~pamnet_fast.data.structures.kabsch`, same
  atom order).
* **Clash filter**: a decoy with more than ``max(5, 1%·N)`` new contacts closer than 2 Å between
  atoms of different units is redrawn (up to 8 times; then the least clashing draw is kept). Draws
  that cannot reach the target RMSD are redrawn with more moves (every second draw adds one set).

Unlike FARFAR2 models, these decoys keep every nucleotide's internal geometry exact and stretch the
backbone slightly at the hinges; they are a controlled testbed, not a physical sampling of folds.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .structures import Structure, kabsch, read_tu_structures

BOND_CUTOFF = 1.9       # Å: covalent C/N/O bonds
CHAIN_BREAK = 3.5       # Å: closest atoms of consecutive units farther than this -> chain break
CLASH = 2.0             # Å: a new contact closer than this between different units is a clash
GENERATOR_VERSION = 1


def nucleotide_units(pos: Tensor) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unit [N], chain_of_unit [U], pivot [U - 1, 3])`` for atoms in file order (see the module doc).
    ``pivot[u]`` is the midpoint of the closest atom pair of units ``u`` and ``u + 1``."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from .. import ops
    x = pos.detach().double().cpu()
    n = x.size(0)
    ei = ops.radius_graph(x, BOND_CUTOFF).numpy()
    adj = sp.coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    # Units in file order: a new unit starts where the component changes; components of <= 2 atoms
    # (OP1/OP2 without their P) belong to the unit that follows them.
    sizes = np.bincount(comp)
    unit = np.empty(n, dtype=np.int64)
    u, pending = -1, 0
    prev_comp = None
    for i in range(n):
        c = comp[i]
        if sizes[c] <= 2:
            pending += 1
            continue
        if c != prev_comp:
            u += 1
            prev_comp = c
        unit[i - pending:i + 1] = u
        pending = 0
    if u < 0:
        raise ValueError("nucleotide_units: no covalently bonded group of more than 2 atoms; "
                         "is this an RNA structure in Å?")
    if pending:
        unit[n - pending:] = u  # trailing isolated atoms join the last unit
    num_units = u + 1
    xs = x.numpy()
    starts = np.searchsorted(unit, np.arange(num_units + 1))
    chain = np.zeros(num_units, dtype=np.int64)
    pivot = np.zeros((max(num_units - 1, 0), 3))
    for k in range(num_units - 1):
        a, b = xs[starts[k]:starts[k + 1]], xs[starts[k + 1]:starts[k + 2]]
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        pivot[k] = 0.5 * (a[i] + b[j])
        chain[k + 1] = chain[k] + (1 if d[i, j] > CHAIN_BREAK else 0)
    return unit, chain, pivot


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


class _Moves:
    """One random draw of hinge and segment moves and noise; ``apply(λ)`` gives the decoy."""

    def __init__(self, x: np.ndarray, unit: np.ndarray, chain: np.ndarray, pivot: np.ndarray,
                 rng: np.random.Generator, boost: int = 1):
        self.x = x
        starts = np.searchsorted(unit, np.arange(len(chain) + 1))
        self.moves = []  # (atom slice, centre, axis, angle scale, translation scale)
        boundaries = [k for k in range(len(chain) - 1) if chain[k] == chain[k + 1]]
        for _ in range(int(rng.integers(1, 5)) * boost if boundaries else 0):
            k = boundaries[int(rng.integers(len(boundaries)))]
            c = chain[k]
            first = starts[int(np.searchsorted(chain, c))]
            last = starts[int(np.searchsorted(chain, c, side="right"))]
            cut = starts[k + 1]
            sl = slice(cut, last) if last - cut <= cut - first else slice(first, cut)
            self.moves.append((sl, pivot[k], rng.normal(size=3), rng.normal() * math.radians(15), None))
        for _ in range(int(rng.integers(0, 3)) + boost - 1):
            u0 = int(rng.integers(len(chain)))
            u1 = min(u0 + int(rng.integers(2, 13)), int(np.searchsorted(chain, chain[u0], side="right")))
            sl = slice(starts[u0], starts[u1])
            self.moves.append((sl, x[sl].mean(0), rng.normal(size=3), rng.normal() * math.radians(10),
                               rng.normal(size=3) * boost))
        self.noise = rng.normal(size=x.shape) * rng.uniform(0.05, 0.25)
        scale = max([abs(m[3]) for m in self.moves] + [1e-6])
        self.lam_max = math.pi / scale  # no rotation beyond 180 degrees

    def apply(self, lam: float) -> np.ndarray:
        y = self.x.copy()
        for sl, centre, axis, angle, shift in self.moves:
            R = _rotation(axis, lam * angle)
            y[sl] = (y[sl] - centre) @ R.T + centre
            if shift is not None:
                y[sl] += lam * shift
        return y + self.noise


def _new_clashes(native_close: set, y: np.ndarray, unit: np.ndarray) -> int:
    from .. import ops
    ei = ops.radius_graph(torch.from_numpy(y), CLASH).numpy()
    keep = (ei[0] < ei[1]) & (unit[ei[0]] != unit[ei[1]])
    return sum(1 for i, j in zip(ei[0][keep].tolist(), ei[1][keep].tolist()) if (i, j) not in native_close)


def target_rmsds(n: int, rng: np.random.Generator, rmsd_min: float = 0.5, rmsd_max: float = 20.0,
                 near_native_fraction: float = 0.1, near_native: float = 2.0) -> np.ndarray:
    """``n`` target RMSDs: ``round(f·n)`` uniform in [rmsd_min, near_native), the rest log-uniform in
    [near_native, rmsd_max]."""
    k = int(round(near_native_fraction * n))
    low = rng.uniform(rmsd_min, near_native, size=k)
    high = np.exp(rng.uniform(math.log(near_native), math.log(rmsd_max), size=n - k))
    return np.concatenate([low, high])


def make_decoys(native: Tensor, n: int, seed: int = 0, *, rmsd_min: float = 0.5, rmsd_max: float = 20.0,
                near_native_fraction: float = 0.1, tol: float = 0.02, max_tries: int = 8,
                targets: Optional[Sequence[float]] = None) -> Tuple[List[np.ndarray], np.ndarray]:
    """``n`` decoys ``[N, 3]`` (float64) of ``native [N, 3]`` and their exact RMSDs to it (Å); the
    target RMSDs are drawn by :func:`target_rmsds` unless given (``targets``, then ``n`` is ignored).
    Each label is within ``tol`` (relative) of its target unless the local noise alone exceeds it."""
    if rmsd_min <= 0 or rmsd_max <= rmsd_min:
        raise ValueError(f"make_decoys: need 0 < rmsd_min < rmsd_max, got {rmsd_min}, {rmsd_max}")
    rng = np.random.default_rng(seed)
    x = native.detach().double().cpu().numpy()
    unit, chain, pivot = nucleotide_units(native)
    from .. import ops
    ei = ops.radius_graph(native.detach().double().cpu(), CLASH).numpy()
    native_close = set(zip(ei[0].tolist(), ei[1].tolist()))
    allowed = max(5, int(0.01 * len(x)))
    decoys, labels = [], []
    if targets is None:
        targets = target_rmsds(n, rng, rmsd_min, rmsd_max, near_native_fraction)
    for target in targets:
        best = None
        for attempt in range(max_tries):
            mv = _Moves(x, unit, chain, pivot, rng, boost=1 + attempt // 2)
            f = lambda lam: kabsch(mv.apply(lam), x)[0]  # noqa: E731
            lo, hi = 0.0, mv.lam_max
            if f(hi) < target:
                continue  # these moves cannot reach the target; draw others
            if f(lo) >= target:
                hi = 0.0  # the local noise alone reaches the target
            else:
                for _ in range(60):  # bisection: f(lo) < target <= f(hi)
                    mid = 0.5 * (lo + hi)
                    v = f(mid)
                    if abs(v - target) <= tol * target:
                        lo = hi = mid
                        break
                    lo, hi = (mid, hi) if v < target else (lo, mid)
            y = mv.apply(hi)
            clashes = _new_clashes(native_close, y, unit)
            if best is None or clashes < best[0]:
                best = (clashes, y)
            if clashes <= allowed:
                break
        if best is None:
            raise RuntimeError(f"make_decoys: could not reach a target RMSD of {target:.2f} Å in "
                               f"{max_tries} draws (structure of {len(x)} atoms)")
        decoys.append(best[1])
        labels.append(kabsch(best[1], x)[0])
    return decoys, np.asarray(labels)


def puzzle_of(name: str) -> str:
    """The RNA-Puzzles number of a native's name ('rna_puzzle_14_free_...' -> '14'): free and bound
    forms of one puzzle are one group for leave-puzzles-out splits."""
    m = re.match(r"rna_puzzle_(\d+)", name)
    return m.group(1) if m else name


class RNADecoys(torch.utils.data.Dataset):
    """Decoys of RNA natives (TU collection in ``root``) with RMSD labels, built once and cached.

    Item ``k``: PyG ``Data(pos [N, 3], z [N], y [1, 1] = RMSD in Å, idx, native)``. ``natives`` are the
    native structures, ``native_of [M]`` the native of each decoy, ``puzzles`` the puzzle number of
    each native.
    """

    def __init__(self, root: str, decoys_per_native: int = 40, seed: int = 0, *, rmsd_min: float = 0.5,
                 rmsd_max: float = 20.0, near_native_fraction: float = 0.1, cache_dir: Optional[str] = None,
                 verbose: bool = True):
        import os
        from .cache import default_cache_dir, files_fingerprint, load_or_build
        if root is None or not os.path.isdir(str(root)):
            raise ValueError(f"RNADecoys: root must be a directory with the natives in TU format "
                             f"(e.g. rna_puzzles_native), got {root!r}")
        if decoys_per_native < 1:
            raise ValueError(f"RNADecoys: decoys_per_native must be >= 1, got {decoys_per_native}")
        self.natives: List[Structure] = read_tu_structures(str(root))
        self.puzzles = [puzzle_of(s.name) for s in self.natives]
        opts = dict(decoys_per_native=int(decoys_per_native), seed=int(seed), rmsd_min=float(rmsd_min),
                    rmsd_max=float(rmsd_max), near_native_fraction=float(near_native_fraction))
        key = {"version": GENERATOR_VERSION, **opts,
               "files": files_fingerprint(os.path.join(str(root), f) for f in sorted(os.listdir(str(root))))}
        cache = default_cache_dir("rna_decoys") if cache_dir is None else cache_dir
        tag = f"decoys_{decoys_per_native}_{seed}.pt"

        def build():
            pos, native_of, labels = [], [], []
            for k, s in enumerate(self.natives):
                if verbose:
                    print(f"decoys of {s.name} ({s.pos.size(0)} atoms)", flush=True)
                d, r = make_decoys(s.pos, decoys_per_native, seed=seed * 1000 + k, rmsd_min=rmsd_min,
                                   rmsd_max=rmsd_max, near_native_fraction=near_native_fraction)
                pos += [torch.from_numpy(p).float() for p in d]
                native_of += [k] * len(d)
                labels.append(torch.from_numpy(r))
            return ({"pos": torch.cat(pos), "native_of": torch.tensor(native_of),
                     "rmsd": torch.cat(labels)}, {"natives": [s.name for s in self.natives]})

        obj = load_or_build(os.path.join(str(cache), tag), key, build, verbose=verbose)
        t = obj["tensors"]
        self.native_of = t["native_of"]
        self.rmsd = t["rmsd"]
        sizes = torch.tensor([self.natives[k].pos.size(0) for k in self.native_of.tolist()])
        self.ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        self.pos = t["pos"]

    def __len__(self) -> int:
        return self.native_of.numel()

    def __getitem__(self, k: int):
        from torch_geometric.data import Data
        k = int(k)
        nat = int(self.native_of[k])
        pos = self.pos[self.ptr[k]:self.ptr[k + 1]]
        return Data(pos=pos, z=self.natives[nat].z, y=self.rmsd[k].view(1, 1).float(),
                    idx=torch.tensor(k), native=torch.tensor(nat))

    def indices_of_puzzles(self, puzzles: Sequence[str]) -> List[int]:
        want = set(puzzles)
        return [k for k in range(len(self)) if self.puzzles[int(self.native_of[k])] in want]

    def summary(self) -> str:
        r = self.rmsd
        return (f"RNA decoys: {len(self)} decoys of {len(self.natives)} natives ({len(set(self.puzzles))} "
                f"puzzles), RMSD {float(r.min()):.2f}-{float(r.max()):.2f} Å, "
                f"{int((r < 2).sum())} near-native (< 2 Å)")

    def row_info(self, k: int) -> Dict[str, object]:
        nat = int(self.native_of[k])
        return {"native": self.natives[nat].name, "puzzle": self.puzzles[nat]}


def leave_puzzles_out(puzzles: Sequence[str], seed: int = 42, n_test: int = 6, n_val: int = 3,
                      test_always: Sequence[str] = ("13",)) -> Dict[str, List[str]]:
    """Split puzzle numbers into train/val/test groups (every form of a puzzle in one group).
    ``test_always`` (RNA-Puzzle 13, whose real predicted models are the external test) is held out."""
    groups = sorted(set(puzzles), key=lambda p: (len(p), p))
    forced = [p for p in groups if p in set(test_always)]
    rest = [p for p in groups if p not in set(test_always)]
    perm = np.random.default_rng(seed).permutation(len(rest))
    rest = [rest[i] for i in perm]
    n_extra = max(0, n_test - len(forced))
    test = forced + rest[:n_extra]
    val = rest[n_extra:n_extra + n_val]
    train = rest[n_extra + n_val:]
    if not train:
        raise ValueError(f"leave_puzzles_out: no training puzzles left ({len(groups)} puzzles, "
                         f"n_test={n_test}, n_val={n_val})")
    return {"train": sorted(train, key=int_key), "val": sorted(val, key=int_key), "test": sorted(test, key=int_key)}


def int_key(p: str):
    return (0, int(p)) if p.isdigit() else (1, p)
