"""Config dataclasses from plain dicts (checkpoints store configs as JSON-safe dicts)."""
from __future__ import annotations

from dataclasses import fields


def config_from_dict(cls, d: dict):
    """``cls(**d)`` for a config dataclass; keys that are not fields of ``cls`` are an error (a checkpoint
    from another version must not be silently half-read)."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown fields {sorted(unknown)}")
    return cls(**d)
