"""Expected outputs of the authors' RNA-Puzzles checkpoint, computed by the authors' own code.

Runs ``models.PAMNet`` of XieResearchGroup/Physics-aware-Multiplex-GNN (the commit that published
``save/pamnet_rna.pt``, 1edb8d94f6b82aac14bfb68b94393dfb0e5fc8a4) on the 21 RNA-Puzzles natives, the way
their ``inference_rna_puzzles.py`` does (``Config('rna_native', dim=16, n_layer=1, cutoff_l=2.6,
cutoff_g=20.0, flow='target_to_source')``, TU data as ``x = [x, y, z, node label]`` float32, batches of 8,
no shuffling), and writes the 21 outputs to a JSON fixture for ``tests/test_nn_compat_rna.py``.

Their code needs torch_cluster / torch_scatter / torch_sparse (source-only builds). This script replaces
the three calls it makes with exact plain-PyTorch shims instead (nothing else of theirs is changed):

* ``torch_cluster.knn(x, y, k, batch_x, batch_y)`` (via ``torch_geometric.nn.knn``): for each point of
  ``y`` its ``k`` nearest points of ``x`` in the same graph, the point itself included (distance 0),
  returned as ``[y index, x index]`` rows, nearest first. Brute force on float32 squared distances, like
  torch_cluster's CPU kernel (nanoflann on the float32 input). A tie at the k-th place would be resolved
  by index here and by the KD-tree there; the script checks that the 21 natives have none
  (``--check-ties``, on by default) and fails otherwise.
* ``torch_scatter.scatter(src, index, dim, dim_size, reduce='add')``: ``torch_geometric.utils.scatter``
  with ``reduce='sum'``.
* ``torch_sparse.SparseTensor(row, col, value, sparse_sizes)``: the subset their ``indices`` uses:
  entries sorted by (row, col); ``adj[idx]`` selects rows (``storage.row()`` = position in ``idx``);
  ``set_value(None).sum(dim=1)`` = entries per row; ``storage.col()``, ``storage.value()``.

Their ``utils/__init__.py`` also imports training helpers; only ``utils/sbf.py`` (the basis formulas) is
needed, so the ``utils`` package is built from that file alone. NumPy >= 2 has no ``np.math``; it is
aliased to :mod:`math` (their ``sph_harm_prefactor`` uses ``np.math.factorial``). Recent PyTorch refuses
their ``torch.arange(..., out=self.freq)`` on a parameter under autograd, so the model is built under
``torch.no_grad()`` (the initial values are overwritten by the checkpoint anyway).

Usage (outside CI; needs sympy, scipy, torch_geometric)::

    git clone https://github.com/XieResearchGroup/Physics-aware-Multiplex-GNN authors
    git -C authors checkout 1edb8d94f6b82aac14bfb68b94393dfb0e5fc8a4
    python3 scripts/reference_rna_outputs.py --authors-src authors \\
        --checkpoint ../shared/data/reference/pamnet_rna.pt \\
        --data ../shared/data/rna_puzzles_native \\
        --out tests/data/pamnet_rna_reference_outputs.json

Their model is run in float32 (as published) and in float64 (written beside it: the spread between the
two, 2.75e-6 relative, is the floating-point noise of their float32 computation).

Checking the knn shim: with torch_cluster 1.6.3 built from source (``MAX_JOBS=1 pip install
--no-build-isolation --no-deps --target /tmp/tc_site torch-cluster==1.6.3``, ~30 min on 2 busy cores),
``PYTHONPATH=/tmp/tc_site python3 scripts/reference_rna_outputs.py --real-knn ...`` calls the real
``torch_cluster.knn``; on the 21 natives it returns the same pairs as the shim and the written outputs
are bit-identical to the committed fixture (float32 and float64).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import types

import numpy as np
import torch


# -- shims ----------------------------------------------------------------------------------------
def knn_shim(x, y, k, batch_x=None, batch_y=None, *args, **kwargs):
    """torch_cluster.knn semantics: rows [y index, x index], k nearest of x for each y (self included)."""
    if batch_x is None:
        batch_x = torch.zeros(x.size(0), dtype=torch.long)
    if batch_y is None:
        batch_y = torch.zeros(y.size(0), dtype=torch.long)
    rows, cols = [], []
    for b in torch.unique(batch_y).tolist():
        qi = (batch_y == b).nonzero().view(-1)
        xi = (batch_x == b).nonzero().view(-1)
        d2 = ((y[qi, None, :] - x[None, xi, :]) ** 2).sum(-1)
        kk = min(k, xi.numel())
        order = torch.sort(d2, dim=1, stable=True)
        if kk < xi.numel() and CHECK_TIES:
            kth, nxt = order.values[:, kk - 1], order.values[:, kk]
            if bool((kth == nxt).any()):
                raise RuntimeError("knn shim: a tie at the k-th neighbour; torch_cluster's KD-tree may "
                                   "break it differently, so these expected values would not be exact")
        rows.append(qi.repeat_interleave(kk))
        cols.append(xi[order.indices[:, :kk]].reshape(-1))
    return torch.cat(rows), torch.cat(cols)


def scatter_shim(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    from torch_geometric.utils import scatter
    if out is not None:
        raise NotImplementedError("scatter shim: out= is not used by the authors' code")
    return scatter(src, index, dim=dim, dim_size=dim_size, reduce="sum" if reduce == "add" else reduce)


class _Storage:
    def __init__(self, row, col, value):
        self._row, self._col, self._value = row, col, value

    def row(self):
        return self._row

    def col(self):
        return self._col

    def value(self):
        return self._value


class SparseTensorShim:
    """The part of torch_sparse.SparseTensor that the authors' ``indices`` uses."""

    def __init__(self, row, col, value=None, sparse_sizes=None, _sorted=False):
        if not _sorted:
            n_cols = sparse_sizes[1]
            perm = torch.argsort(row * n_cols + col, stable=True)
            row, col = row[perm], col[perm]
            value = None if value is None else value[perm]
        self.sizes = tuple(sparse_sizes)
        self.storage = _Storage(row, col, value)
        counts = torch.bincount(row, minlength=self.sizes[0])
        self._rowptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def __getitem__(self, idx):
        start, end = self._rowptr[idx], self._rowptr[idx + 1]
        count = end - start
        new_row = torch.arange(idx.numel()).repeat_interleave(count)
        offset = torch.arange(int(count.sum())) - (torch.cumsum(count, 0) - count).repeat_interleave(count)
        pos = start.repeat_interleave(count) + offset
        value = self.storage.value()
        return SparseTensorShim(new_row, self.storage.col()[pos], None if value is None else value[pos],
                                (idx.numel(), self.sizes[1]), _sorted=True)

    def set_value(self, value):
        return SparseTensorShim(self.storage.row(), self.storage.col(), value, self.sizes, _sorted=True)

    def sum(self, dim):
        if dim != 1 or self.storage.value() is not None:
            raise NotImplementedError("SparseTensor shim: only set_value(None).sum(dim=1) is used")
        return torch.bincount(self.storage.row(), minlength=self.sizes[0])


CHECK_TIES = True


def load_authors_code(src: str, real_knn: bool = False):
    """Import their ``models`` with the shims in place (``real_knn``: keep PyG's ``knn``, i.e. a real
    torch_cluster); returns the module."""
    import torch_geometric  # noqa: F401  (import PyG before the fake modules exist)
    import torch_geometric.nn  # noqa: F401
    if not hasattr(np, "math"):
        np.math = math
    sys.modules["torch_scatter"] = types.SimpleNamespace(scatter=scatter_shim)
    sys.modules["torch_sparse"] = types.SimpleNamespace(SparseTensor=SparseTensorShim)
    # utils = their utils/sbf.py only
    spec = importlib.util.spec_from_file_location("utils.sbf", os.path.join(src, "utils", "sbf.py"))
    sbf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sbf)
    utils = types.ModuleType("utils")
    utils.bessel_basis, utils.real_sph_harm, utils.sbf = sbf.bessel_basis, sbf.real_sph_harm, sbf
    sys.modules["utils"], sys.modules["utils.sbf"] = utils, sbf
    sys.path.insert(0, os.path.abspath(src))
    import models
    if real_knn:  # PyG >= 2.7 routes nn.knn to pyg-lib, so call torch_cluster directly
        import torch_cluster
        models.knn = lambda x, y, k, batch_x=None, batch_y=None: torch_cluster.knn(x, y, k, batch_x, batch_y)
    else:
        models.knn = knn_shim
    return models


def read_tu_like_authors(directory: str, prefix: str = "rna_native"):
    """Their TUDataset's graphs: ``x = [node_attributes, node_label]`` float32, split by the indicator."""
    from torch_geometric.data import Data
    from torch_geometric.io import read_txt_array
    f = lambda name, dtype=None: read_txt_array(os.path.join(directory, f"{prefix}_{name}.txt"),
                                                sep=",", dtype=dtype)
    batch = f("graph_indicator", torch.long) - 1
    x = torch.cat([f("node_attributes"), f("node_labels").unsqueeze(-1)], dim=-1)
    with open(os.path.join(directory, f"{prefix}_graph_names.txt")) as fh:
        names = [line.strip() for line in fh if line.strip()]
    graphs = [Data(x=x[batch == g]) for g in range(int(batch.max()) + 1)]
    return graphs, names


def run(models, checkpoint: str, graphs, dtype, batch_size: int):
    from torch_geometric.loader import DataLoader
    config = models.Config(dataset="rna_native", dim=16, n_layer=1, cutoff_l=2.6, cutoff_g=20.0,
                           flow="target_to_source")
    with torch.no_grad():  # their BesselBasisLayer init uses arange(out=Parameter), refused under autograd
        model = models.PAMNet(config)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    model = model.to(dtype).eval()
    out = []
    with torch.no_grad():
        for data in DataLoader([g.clone() for g in graphs], batch_size=batch_size, shuffle=False):
            data.x = data.x.to(dtype)
            out += model(data).reshape(-1).tolist()
    return out


def main(argv=None):
    global CHECK_TIES
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-src", required=True, help="checkout of the authors' repository (1edb8d94)")
    p.add_argument("--checkpoint", required=True, help="their save/pamnet_rna.pt")
    p.add_argument("--data", required=True, help="directory with rna_native_*.txt (their TU files)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--batch-size", type=int, default=8, help="their inference batch size (8)")
    p.add_argument("--no-check-ties", action="store_true")
    p.add_argument("--real-knn", action="store_true",
                   help="use an installed torch_cluster's knn instead of the shim (to check the shim)")
    args = p.parse_args(argv)
    CHECK_TIES = not args.no_check_ties
    torch.set_num_threads(1)
    models = load_authors_code(args.authors_src, real_knn=args.real_knn)
    graphs, names = read_tu_like_authors(args.data)
    out32 = run(models, args.checkpoint, graphs, torch.float32, args.batch_size)
    out64 = run(models, args.checkpoint, graphs, torch.float64, args.batch_size)
    spread = max(abs(a - b) / abs(b) for a, b in zip(out32, out64))
    result = {
        "source": "XieResearchGroup/Physics-aware-Multiplex-GNN@1edb8d94f6b82aac14bfb68b94393dfb0e5fc8a4 "
                  "models.PAMNet + save/pamnet_rna.pt, run by scripts/reference_rna_outputs.py "
                  f"({'torch_cluster.knn' if args.real_knn else 'torch_cluster.knn (shim)'}; "
                  "torch_scatter.scatter / torch_sparse.SparseTensor replaced by exact plain-PyTorch "
                  "shims)",
        "config": {"dataset": "rna_native", "dim": 16, "n_layer": 1, "cutoff_l": 2.6, "cutoff_g": 20.0,
                   "flow": "target_to_source", "batch_size": args.batch_size},
        "torch": torch.__version__,
        "names": names,
        "num_atoms": [g.num_nodes for g in graphs],
        "float32": out32,
        "float64": out64,
        "max_rel_float32_vs_float64": spread,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: 21 outputs, float32 vs float64 max relative {spread:.2e}")
    for n, a, b in zip(names, out32, out64):
        print(f"  {n:70s} {a: .8f} {b: .10f}")


if __name__ == "__main__":
    main()
