"""Where pamnet-fast keeps its caches (processed datasets, derived model constants)."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir(*parts: str) -> Path:
    """``$PAMNET_FAST_CACHE/<parts>``, or ``~/.cache/pamnet_fast/<parts>`` when the variable is unset."""
    base = os.environ.get("PAMNET_FAST_CACHE")
    root = Path(base).expanduser() if base else Path("~/.cache/pamnet_fast").expanduser()
    return root.joinpath(*parts)
