"""Baselines for QM9: PyG's stock SchNet and DimeNet++ running on the pamnet-fast ops.

:class:`SchNetBaseline` and :class:`DimeNetPlusPlusBaseline` wrap
:class:`torch_geometric.nn.models.SchNet` and :class:`torch_geometric.nn.models.DimeNetPlusPlus`
unchanged, with the PAMNet interface (``model(data) -> [num_graphs, 1]``, a ``config`` with
``to_dict``/``from_dict``) so that the trainer, checkpoints and the ``pamnet-fast`` CLI treat them like
PAMNet. Constructing one calls :func:`pamnet_fast.pyg.accelerate` (unless already active), so their
radius graphs and DimeNet++'s triplets come from :mod:`pamnet_fast.ops` (no ``torch_cluster`` or
``torch_sparse`` needed); see :mod:`pamnet_fast.pyg` for how that matches PyG's own results.

The default configs are the QM9 settings: SchNet with PyG's defaults (which follow the paper) and
DimeNet++ with the paper's QM9 hyper-parameters.

References:
    K. T. Schütt et al., "SchNet: A continuous-filter convolutional neural network for modeling
    quantum interactions", NeurIPS 2017, arXiv:1706.08566.
    J. Gasteiger, S. Giri, J. T. Margraf, S. Günnemann, "Fast and Uncertainty-Aware Directional
    Message Passing for Non-Equilibrium Molecules", NeurIPS-W 2020, arXiv:2011.14115.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import threading
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .config_dict import config_from_dict

__all__ = ["SchNetConfig", "SchNetBaseline", "DimeNetPlusPlusConfig", "DimeNetPlusPlusBaseline"]


class _Config:
    """``to_dict``/``from_dict`` (for checkpoints), as in :class:`~pamnet_fast.nn.PAMNetConfig`."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return config_from_dict(cls, d)

    @classmethod
    def qm9(cls, **kw):
        """The QM9 settings (the defaults), with overrides."""
        return cls(**kw)


@dataclass
class SchNetConfig(_Config):
    """PyG ``SchNet`` arguments; defaults are PyG's (= the paper's QM9 model)."""
    hidden_channels: int = 128
    num_filters: int = 128
    num_interactions: int = 6
    num_gaussians: int = 50
    cutoff: float = 10.0


@dataclass
class DimeNetPlusPlusConfig(_Config):
    """PyG ``DimeNetPlusPlus`` arguments; defaults are the DimeNet++ paper's QM9 settings."""
    hidden_channels: int = 128
    out_channels: int = 1
    num_blocks: int = 4
    int_emb_size: int = 64
    basis_emb_size: int = 8
    out_emb_channels: int = 256
    num_spherical: int = 7
    num_radial: int = 6
    cutoff: float = 5.0
    envelope_exponent: int = 5
    num_before_skip: int = 1
    num_after_skip: int = 2
    num_output_layers: int = 3


def _ensure_accelerated() -> None:
    from .. import pyg
    # accelerate() with default arguments would reset options the user chose (e.g. reference=True).
    if not pyg.is_accelerated():
        pyg.accelerate()


def _per_graph(net: nn.Module, data) -> Tensor:
    """Run a PyG ``net(z, pos, batch)`` on ``data`` (z [N], pos [N, 3], optional batch [N]);
    returns ``[num_graphs, 1]``."""
    z, pos = data.z, data.pos
    batch = getattr(data, "batch", None)
    if batch is None:
        # DimeNet returns a [1]-shaped sum for batch=None; an explicit batch keeps [1, 1].
        batch, num_graphs = torch.zeros_like(z), 1
    else:
        num_graphs = int(data.num_graphs) if hasattr(data, "num_graphs") else int(batch.max()) + 1
    out = net(z, pos, batch)
    if out.dim() == 1:
        out = out[:, None]
    if out.size(0) < num_graphs:  # PyG's readout sizes by batch.max() + 1 (trailing empty graphs)
        out = torch.cat([out, out.new_zeros(num_graphs - out.size(0), out.size(1))])
    return out


class SchNetBaseline(nn.Module):
    """PyG's stock SchNet on the pamnet-fast radius graph: ``model(data) -> [num_graphs, 1]``.

    ``data``: z ``[N]`` (long), pos ``[N, 3]``, batch ``[N]`` (optional: one molecule). The PyG module
    is ``self.net``. Schütt et al., NeurIPS 2017 (arXiv:1706.08566).
    """

    def __init__(self, config: SchNetConfig = None):
        super().__init__()
        _ensure_accelerated()
        from torch_geometric.nn.models import SchNet
        self.config = config if config is not None else SchNetConfig()
        self.net = SchNet(**asdict(self.config))

    def forward(self, data) -> Tensor:
        return _per_graph(self.net, data)


class DimeNetPlusPlusBaseline(nn.Module):
    """PyG's stock DimeNet++ on the pamnet-fast radius graph and triplets:
    ``model(data) -> [num_graphs, out_channels]``.

    ``data``: z ``[N]`` (long), pos ``[N, 3]``, batch ``[N]`` (optional: one molecule). The PyG module
    is ``self.net``. PyG derives the spherical basis with sympy when the module is built (~10 s for
    num_spherical=7, num_radial=6); the expressions are cached on disk (see :func:`_sympy_cache`).
    Gasteiger et al., NeurIPS-W 2020 (arXiv:2011.14115).
    """

    def __init__(self, config: DimeNetPlusPlusConfig = None):
        super().__init__()
        _ensure_accelerated()
        from torch_geometric.nn.models import DimeNetPlusPlus
        self.config = config if config is not None else DimeNetPlusPlusConfig()
        with _sympy_cache():
            self.net = DimeNetPlusPlus(**asdict(self.config))

    def forward(self, data) -> Tensor:
        return _per_graph(self.net, data)


# ------------------------------------------------------------------ DimeNet's symbolic basis
_sympy_lock = threading.RLock()
_sympy_memo: dict = {}


def _sympy_cache_path(kind: str, *args: int):
    import sympy
    import torch_geometric
    from .._paths import default_cache_dir
    # The expressions depend on PyG's derivation code and sympy's object layout.
    name = f"{kind}_{'_'.join(map(str, args))}_pyg{torch_geometric.__version__}_sympy{sympy.__version__}.pkl"
    return default_cache_dir("dimenet") / name


def _memoized(kind: str, fn):
    def wrapper(*args, **kwargs):
        if kwargs:  # not how DimeNet calls them; left uncached
            return fn(*args, **kwargs)
        key = (kind,) + args
        if key in _sympy_memo:
            return _sympy_memo[key]
        path = _sympy_cache_path(kind, *args)
        forms = None
        with contextlib.suppress(Exception):  # missing or unreadable: recompute
            with open(path, "rb") as f:
                forms = pickle.load(f)
        if forms is None:
            forms = fn(*args)
            with contextlib.suppress(OSError):  # a read-only cache only costs time
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    pickle.dump(forms, f)
                os.replace(tmp, path)
        _sympy_memo[key] = forms
        return forms
    return wrapper


@contextlib.contextmanager
def _sympy_cache():
    """While building a DimeNet, serve PyG's ``bessel_basis``/``real_sph_harm`` (pure sympy derivations)
    from memory or from ``$PAMNET_FAST_CACHE/dimenet`` (default ``~/.cache/pamnet_fast/dimenet``).
    The same sympy expressions come back, so the model is the same; PyG is restored on exit."""
    from torch_geometric.nn.models import dimenet_utils as du
    with _sympy_lock:
        saved = du.bessel_basis, du.real_sph_harm
        du.bessel_basis = _memoized("bessel_basis", saved[0])
        du.real_sph_harm = _memoized("real_sph_harm", saved[1])
        try:
            yield
        finally:
            du.bessel_basis, du.real_sph_harm = saved
