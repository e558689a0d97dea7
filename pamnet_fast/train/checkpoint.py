"""Checkpoints: atomic writes, RNG state capture/restore, model/config compatibility checks."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.cache import atomic_torch_save

CHECKPOINT_FORMAT = "pamnet-fast-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointMismatchError(RuntimeError):
    """The checkpoint was written for a different model, model config or training setup."""


def config_to_dict(config: Any) -> Optional[dict]:
    """A JSON/pickle-safe dict of a model config (dataclass, dict, object with to_dict/__dict__)."""
    if config is None:
        return None
    if isinstance(config, dict):
        d = dict(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        d = dataclasses.asdict(config)
    elif hasattr(config, "to_dict"):
        d = dict(config.to_dict())
    else:
        d = {k: v for k, v in vars(config).items() if not k.startswith("_")}
    return _plain(d)


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    if isinstance(x, torch.dtype):
        return str(x)
    return repr(x)


def model_config_of(model) -> Optional[dict]:
    return config_to_dict(getattr(model, "config", None))


# ---------------------------------------------------------------- RNG states
def get_rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- save / load
def save_checkpoint(state: dict, path) -> None:
    state = dict(state)
    state["format"] = CHECKPOINT_FORMAT
    state["version"] = CHECKPOINT_VERSION
    atomic_torch_save(state, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"checkpoint {path} is unreadable (corrupt or truncated?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path} is not a pamnet-fast checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise RuntimeError(f"checkpoint {path} has format version {state['version']}, newer than "
                           f"this pamnet-fast ({CHECKPOINT_VERSION}); upgrade pamnet-fast")
    return state


def _dict_diff(a: Optional[dict], b: Optional[dict], prefix="") -> list:
    a = a or {}
    b = b or {}
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(f"{prefix}{k}: checkpoint={va!r}, current={vb!r}")
    return out


# config fields that change a run's time and memory, not the model it trains: a checkpoint written
# with one value resumes or loads with another
_RUNTIME_FIELDS = ("activation_checkpointing",)


def _model_fields(config: Optional[dict]) -> Optional[dict]:
    return None if config is None else {k: v for k, v in config.items() if k not in _RUNTIME_FIELDS}


def check_compatible(state: dict, model_name: Optional[str], model_config: Optional[dict],
                     model_state: Optional[dict] = None, path="checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming the mismatch between a checkpoint and the
    current model (name, config fields, parameter names/shapes)."""
    problems = []
    ck_name = state.get("model_name")
    if model_name is not None and ck_name is not None and ck_name != model_name:
        problems.append(f"model: checkpoint={ck_name!r}, current={model_name!r}")
    if model_config is not None or state.get("model_config") is not None:
        problems += [f"model config {d}" for d in _dict_diff(_model_fields(state.get("model_config")),
                                                              _model_fields(model_config))]
    if model_state is not None and "model" in state:
        ck = state["model"]
        missing = sorted(set(model_state) - set(ck))
        extra = sorted(set(ck) - set(model_state))
        if missing:
            problems.append(f"parameters missing from checkpoint: {missing[:5]}")
        if extra:
            problems.append(f"unexpected parameters in checkpoint: {extra[:5]}")
        for k in sorted(set(ck) & set(model_state)):
            if tuple(ck[k].shape) != tuple(model_state[k].shape):
                problems.append(f"parameter {k}: checkpoint shape {tuple(ck[k].shape)}, "
                                f"current {tuple(model_state[k].shape)}")
    if problems:
        raise CheckpointMismatchError(
            f"{path} does not match the current model:\n  " + "\n  ".join(problems))
