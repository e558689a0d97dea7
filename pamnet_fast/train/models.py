"""Models the trainer and the CLI know by name (``pamnet-fast train --model NAME``).

An entry builds a module from a config dict (stored in checkpoints, so a run is rebuilt exactly) for a
dataset: ``default_config(dataset)`` is the preset a fresh run uses (e.g. PAMNet's ``qm9`` preset on
QM9), ``build(config, dataset)`` makes the module. New models register with :func:`register_model`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass
class ModelEntry:
    build: Callable[[dict, str], "nn.Module"]
    default_config: Callable[[str], dict]
    public: bool = True  # hidden entries (the tests' tiny model) are not offered by --help


MODELS: Dict[str, ModelEntry] = {}


def register_model(name: str, build: Callable[[dict, str], "nn.Module"],
                   default_config: Callable[[str], dict], public: bool = True) -> None:
    MODELS[name] = ModelEntry(build, default_config, public)


def model_names(public_only: bool = True) -> List[str]:
    _register_builtin()
    return [k for k, e in MODELS.items() if e.public or not public_only]


def _entry(name: str) -> ModelEntry:
    _register_builtin()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    return MODELS[name]


def default_model_config(name: str, dataset: str = "qm9") -> dict:
    """The config dict a fresh run of ``name`` on ``dataset`` uses, without building the model."""
    return _entry(name).default_config(dataset)


def build_model(name: str, config: Optional[dict] = None, dataset: str = "qm9") -> "nn.Module":
    """The module of model ``name`` for ``dataset``; ``config`` (e.g. from a checkpoint) overrides the
    dataset's default config entirely."""
    e = _entry(name)
    return e.build(dict(config) if config else e.default_config(dataset), dataset)


def dataclass_from_dict(cls, d: dict):
    """``cls(**d)`` for a config dataclass, lists turned back into tuples; unknown keys are an error."""
    if hasattr(cls, "from_dict"):
        return cls.from_dict(d)
    from ..nn.config_dict import config_from_dict
    return config_from_dict(cls, {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


# ----------------------------------------------------------------------------- built-in models
_REGISTERED = False


def _register_builtin() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from .checkpoint import config_to_dict

    def pamnet_entry(small: bool):
        def build(config: dict, dataset: str):
            from .. import nn as pnn
            model = (pnn.PAMNetS if small else pnn.PAMNet)(pnn.PAMNetConfig.from_dict(config))
            return pnn.ProteinLigandHead(model) if dataset == "pdbbind" else model

        def default(dataset: str):
            from .. import nn as pnn
            presets = {"pdbbind": pnn.PAMNetConfig.pdbbind, "rna_decoys": pnn.PAMNetConfig.rna}
            return config_to_dict(presets.get(dataset, pnn.PAMNetConfig.qm9)())
        return build, default

    for name, small in (("pamnet", False), ("pamnet-s", True)):
        register_model(name, *pamnet_entry(small))

    def baseline(kind: str):
        def build(config: dict, dataset: str):
            from .. import nn as pnn
            if dataset == "pdbbind":
                raise ValueError(f"model {kind} does not take protein-ligand complexes; use pamnet or pamnet-s")
            cls, cfg = {"schnet": (pnn.SchNetBaseline, pnn.SchNetConfig),
                        "dimenet++": (pnn.DimeNetPlusPlusBaseline, pnn.DimeNetPlusPlusConfig)}[kind]
            return cls(dataclass_from_dict(cfg, config))

        def default(dataset: str):
            from .. import nn as pnn
            cfg = {"schnet": pnn.SchNetConfig, "dimenet++": pnn.DimeNetPlusPlusConfig}[kind]
            return config_to_dict(cfg.qm9() if hasattr(cfg, "qm9") else cfg())
        return build, default

    register_model("schnet", *baseline("schnet"))
    register_model("dimenet++", *baseline("dimenet++"))

    def tiny_build(config: dict, dataset: str):
        from .tiny import TinyConfig, TinyModel
        return TinyModel(dataclass_from_dict(TinyConfig, config))

    def tiny_default(dataset: str):
        from .tiny import TinyConfig
        return config_to_dict(TinyConfig())

    register_model("tiny", tiny_build, tiny_default, public=False)

    from .physchem_tasks import register_models as register_physchem_models
    register_physchem_models(register_model)
