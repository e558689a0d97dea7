"""Shared helpers for the op tests."""
import contextlib

import torch


@contextlib.contextmanager
def num_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def random_csr(num_rows, num_cols, nnz, generator=None):
    """A random CSR layout: ``src [nnz]`` random columns and ``ptr [num_rows + 1]`` over sorted rows
    (some rows empty)."""
    rows = torch.randint(0, max(num_rows, 1), (nnz,), generator=generator).sort().values
    src = torch.randint(0, max(num_cols, 1), (nnz,), generator=generator)
    counts = torch.bincount(rows, minlength=num_rows)
    return src, torch.cat([counts.new_zeros(1), counts.cumsum(0)])
