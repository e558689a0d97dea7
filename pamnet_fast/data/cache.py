"""Atomic, versioned, integrity-checked on-disk cache of a dict of tensors."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from .._paths import default_cache_dir  # noqa: F401  (re-exported for the data modules)

log = logging.getLogger(__name__)


class CacheWarning(UserWarning):
    """A cache file was corrupt or stale and is being rebuilt."""


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def files_fingerprint(paths) -> list:
    """Cheap fingerprint of source files: name, size and mtime (ns)."""
    out = []
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def tensors_checksum(tensors: dict) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_write(path, write: Callable, mode: str = "w") -> None:
    """Write ``path`` atomically: ``write(f)`` fills a temp file in the same directory (opened with
    ``mode``; text mode with ``newline=""``, as the csv module wants), which is fsynced and renamed onto
    ``path`` (atomic on POSIX). On any error the temp file is removed and an old ``path`` is intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; use the normal file mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f), "wb")


@contextlib.contextmanager
def file_lock(path):
    """Exclusive inter-process lock (fcntl) so concurrent builders do the work once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _try_load(path: Path, expected_key: str):
    """Returns (obj, None) when valid, (None, reason) otherwise."""
    if not path.exists():
        return None, "missing"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, ...
        return None, f"corrupt (unreadable: {type(e).__name__}: {e})"
    if not isinstance(obj, dict) or "meta" not in obj or "tensors" not in obj:
        return None, "corrupt (unexpected structure)"
    meta = obj["meta"]
    if meta.get("key_hash") != expected_key:
        return None, "stale (source files, processing options or format version changed)"
    if tensors_checksum(obj["tensors"]) != meta.get("checksum"):
        return None, "corrupt (checksum mismatch)"
    return obj, None


def load_or_build(path, key: dict, build: Callable[[], tuple], force_rebuild: bool = False,
                  verbose: bool = True) -> dict:
    """Load ``{"meta", "tensors"}`` from ``path`` if it was built with ``key``; otherwise call
    ``build() -> (tensors: dict, meta: dict)``, write atomically and return it.

    A corrupt or stale file is reported with a :class:`CacheWarning` and rebuilt, never used.
    """
    path = Path(path)
    kh = key_hash(key)
    if not force_rebuild:
        obj, reason = _try_load(path, kh)
        if obj is not None:
            return obj
    with file_lock(path.with_name(path.name + ".lock")):
        if not force_rebuild:
            obj, reason = _try_load(path, kh)  # somebody else may have built it meanwhile
            if obj is not None:
                return obj
            if reason != "missing":
                warnings.warn(f"cache {path} is {reason}; rebuilding it", CacheWarning, stacklevel=3)
        tensors, meta = build()
        meta = dict(meta)
        meta["key"] = key
        meta["key_hash"] = kh
        meta["checksum"] = tensors_checksum(tensors)
        obj = {"meta": meta, "tensors": tensors}
        atomic_torch_save(obj, path)
        if verbose:
            log.info("wrote cache %s", path)
        return obj
