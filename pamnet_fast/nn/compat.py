r"""Load state dicts saved by the authors' PAMNet code (XieResearchGroup/Physics-aware-Multiplex-GNN).

Our modules keep the authors' parameter names (``embeddings``, ``init_linear.weight``, ``rbf_g.freq``,
``mlp_rbf_g.0.0.weight``, ``mlp_sbf1.0.0.bias``, ``global_layer.0.mlp_m.0.0.weight``,
``local_layer.0.res2.mlp.1.0.weight``, ``local_layer.0.W``, ...), so the name map is the identity on
the shared parameters. Their ``PAMNet`` holds both ``embeddings [5, dim]`` and ``init_linear.weight
[dim, 18]`` (QM9, PDBbind; one of them unused, skipped here), except for RNA datasets, where it holds
``embeddings [3, dim]`` only (rows C, N, O; the atom's node label is its row). To run one of their
checkpoints with their numerics, build the model with the matching preset and
``reference_compat=True``, then load; for the published RNA-Puzzles checkpoint ``save/pamnet_rna.pt``::

    model = PAMNet(PAMNetConfig.rna(reference_compat=True))   # dim 16, 1 layer, rows C/N/O
    model.load_reference_state_dict(load_reference_checkpoint("pamnet_rna.pt"))

which reproduces the outputs of their ``inference_rna_puzzles.py`` on the 21 natives to < 1e-6
relative (float32; ``tests/test_nn_compat_rna.py``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Tuple

import torch
from torch import nn


def _mlp(prefix: str, channels) -> Dict[str, Tuple[int, ...]]:
    out = OrderedDict()
    for k in range(1, len(channels)):
        out[f"{prefix}.{k - 1}.0.weight"] = (channels[k], channels[k - 1])
        out[f"{prefix}.{k - 1}.0.bias"] = (channels[k],)
    return out


def reference_layout(small: bool, dim: int, n_layer: int, num_radial: int = 16, num_spherical: int = 7,
                     num_spherical_radial: int = 6, in_features: int = 18, rna: bool = False
                     ) -> Dict[str, Tuple[int, ...]]:
    """Parameter names and shapes of the authors' ``PAMNet`` (``small=False``) / ``PAMNet_s``, in their
    registration order (written from their ``models.py`` and ``layers/*.py``). ``rna``: their PAMNet
    built for an RNA dataset (``embeddings [3, dim]``, no ``init_linear``)."""
    if rna and small:
        raise ValueError("reference_layout: the authors' PAMNet_s has no RNA variant (QM9 only)")
    d, n_sbf = dim, num_spherical * num_spherical_radial
    out: Dict[str, Tuple[int, ...]] = OrderedDict()
    out["embeddings"] = (RNA_EMBEDDING_ROWS if rna else 5, d)
    if not small and not rna:
        out["init_linear.weight"] = (d, in_features)
    out["rbf_g.freq"] = (num_radial,)
    out["rbf_l.freq"] = (num_radial,)
    out.update(_mlp("mlp_rbf_g", [num_radial, d]))
    out.update(_mlp("mlp_rbf_l", [num_radial, d]))
    if small:
        out.update(_mlp("mlp_sbf", [n_sbf, d]))
    else:
        out.update(_mlp("mlp_sbf1", [n_sbf, d]))
        out.update(_mlp("mlp_sbf2", [n_sbf, d]))

    def update_block(p):
        o = OrderedDict()
        for r in ("res1", "res2", "res3"):
            o.update(_mlp(f"{p}.{r}.mlp", [d, d, d]))
        return o

    for t in range(n_layer):
        p = f"global_layer.{t}"
        out.update(_mlp(f"{p}.mlp_x1", [d, d]))
        out.update(_mlp(f"{p}.mlp_x2", [d, d]))
        out.update(update_block(p))
        out.update(_mlp(f"{p}.mlp_m", [3 * d, d]))
        out[f"{p}.W_edge_attr.weight"] = (d, d)
        out.update(_mlp(f"{p}.mlp_out", [d, d, d, d]))
        out[f"{p}.W_out.weight"] = (1, d)
        out[f"{p}.W_out.bias"] = (1,)
        out[f"{p}.W"] = (d, 1)
    for t in range(n_layer):
        p = f"local_layer.{t}"
        out.update(_mlp(f"{p}.mlp_x1", [d, d]))
        out.update(_mlp(f"{p}.mlp_m_ji", [3 * d, d]))
        out.update(_mlp(f"{p}.mlp_m_jj" if small else f"{p}.mlp_m_kj", [3 * d, d]))
        out.update(_mlp(f"{p}.mlp_sbf", [d, d, d]))
        out[f"{p}.lin_rbf.weight"] = (d, d)
        out.update(update_block(p))
        out[f"{p}.lin_rbf_out.weight"] = (d, d)
        out.update(_mlp(f"{p}.mlp_x2", [d, d]))
        out.update(_mlp(f"{p}.mlp_out", [d, d, d, d]))
        out[f"{p}.W_out.weight"] = (1, d)
        out[f"{p}.W_out.bias"] = (1,)
        out[f"{p}.W"] = (d, 1)
    return out


RNA_EMBEDDING_ROWS = 3  # the authors' RNA models embed C, N, O (node labels 0, 1, 2)


def _is_small(model: nn.Module) -> bool:
    from .pamnet import PAMNetS
    return isinstance(model, PAMNetS)


def _is_rna_layout(model: nn.Module) -> bool:
    """Whether the model corresponds to the authors' RNA ``PAMNet`` (3 embedding rows C, N, O)."""
    emb = getattr(model, "embeddings", None)
    return (not _is_small(model) and emb is not None and emb.size(0) == RNA_EMBEDDING_ROWS
            and tuple(model.config.atom_types) == (6, 7, 8))


def _layout(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    cfg = model.config
    return reference_layout(_is_small(model), cfg.dim, cfg.n_layer, cfg.num_radial, cfg.num_spherical,
                            cfg.num_spherical_radial, cfg.in_features or 18, rna=_is_rna_layout(model))


def load_reference_checkpoint(path) -> "OrderedDict[str, torch.Tensor]":
    """A state dict saved by the authors' code (e.g. their ``save/pamnet_rna.pt``, saved from a GPU),
    loaded onto the CPU with ``weights_only=True`` (tensors only; no code runs)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"load_reference_checkpoint: {path} is not a plain state_dict of tensors")
    return sd


def reference_key_map(model: nn.Module) -> Dict[str, str]:
    """``{their name: our name}`` for every parameter of the authors' layout that this model uses."""
    ours = dict(model.named_parameters())
    layout = _layout(model)
    mapping = {}
    for name in layout:
        if name in ("embeddings", "init_linear.weight") and name not in ours:
            continue  # the authors' model carries both; only one is used per dataset
        if name not in ours:
            raise KeyError(f"reference_key_map: {name} of the authors' layout has no counterpart here")
        mapping[name] = name
    uncovered = [n for n in ours if n not in mapping and not n.startswith("dipole_head.")]
    if uncovered:
        raise KeyError(f"reference_key_map: parameters {uncovered[:4]} have no counterpart in the "
                       f"authors' {'PAMNet_s' if _is_small(model) else 'PAMNet'} (their PAMNet_s has no "
                       f"init_linear: it is QM9-only)")
    return mapping


def load_reference_state_dict(model: nn.Module, state_dict, strict: bool = True):
    """Copy the authors' parameters into ``model``. ``strict``: every parameter of their layout that the
    model uses must be present with the right shape, and no unknown key may be left over (their unused
    ``embeddings``/``init_linear.weight`` and non-parameter entries are tolerated). Parameters of ours
    that they do not have (e.g. the dipole head) are left as they are. Returns the list of their keys
    that were not used."""
    mapping = reference_key_map(model)
    ours = dict(model.named_parameters())
    missing = [k for k in mapping if k not in state_dict]
    skippable = {"embeddings", "init_linear.weight"}
    unused = [k for k in state_dict if k not in mapping]
    if strict and missing:
        raise KeyError(f"load_reference_state_dict: missing keys {missing[:8]}"
                       f"{' ...' if len(missing) > 8 else ''}")
    if strict and [k for k in unused if k not in skippable]:
        bad = [k for k in unused if k not in skippable]
        raise KeyError(f"load_reference_state_dict: unexpected keys {bad[:8]}"
                       f"{' ...' if len(bad) > 8 else ''}")
    with torch.no_grad():
        for theirs, name in mapping.items():
            if theirs not in state_dict:
                continue
            src, dst = state_dict[theirs], ours[name]
            if tuple(src.shape) != tuple(dst.shape):
                hint = "check dim / n_layer / out_dim"
                if theirs == "embeddings" and src.size(0) == RNA_EMBEDDING_ROWS:
                    hint = ("the authors' RNA models embed C, N, O only: build the model with "
                            "PAMNetConfig.rna(reference_compat=True), or atom_types=(6, 7, 8)")
                raise ValueError(f"load_reference_state_dict: {theirs} has shape {tuple(src.shape)}, "
                                 f"expected {tuple(dst.shape)} ({hint})")
            dst.copy_(src)
    return unused


def to_reference_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The model's parameters under the authors' names, in their layout (an unused ``embeddings`` or
    ``init_linear.weight`` is filled with zeros), loadable by their code."""
    mapping = reference_key_map(model)
    ours = dict(model.named_parameters())
    layout = _layout(model)
    ref = next(iter(ours.values()))
    out = OrderedDict()
    for name, shape in layout.items():
        out[name] = (ours[mapping[name]].detach().clone() if name in mapping
                     else torch.zeros(shape, dtype=ref.dtype))
    return out
