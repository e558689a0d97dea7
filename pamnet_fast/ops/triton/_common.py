"""Shared helpers of the Triton kernels: interpreter detection, precise math, launch utilities."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# TRITON_INTERPRET=1 runs the kernels on CPU tensors with numpy (read when kernels are decorated).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

if INTERPRET:
    # The interpreter evaluates tl.sin / tl.cos with numpy (correctly rounded for practical purposes);
    # libdevice calls are not supported there.
    @triton.jit
    def sin(x):
        return tl.sin(x)

    @triton.jit
    def cos(x):
        return tl.cos(x)
else:  # pragma: no cover - needs a GPU
    from triton.language.extra import libdevice

    # libdevice's __nv_sinf / __nv_sin are accurate to ~1 ulp over the whole range, unlike the
    # hardware sin.approx.f32 a plain tl.sin may lower to for float32.
    @triton.jit
    def sin(x):
        return libdevice.sin(x)

    @triton.jit
    def cos(x):
        return libdevice.cos(x)


# Launch options of the arithmetic kernels: 4 warps, and FMA contraction explicitly allowed (fewer
# roundings, faster; Triton 3.9 warns when it is left implicit). The neighbor-search kernels pass
# enable_fp_fusion=False instead (see neighbors.py).
LAUNCH = dict(num_warps=4, enable_fp_fusion=True)


def next_pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def feature_block(num_features: int, cap: int = 128) -> int:
    """BLOCK_F: the feature tile of the segment kernels (a power of two, at most ``cap``)."""
    return min(cap, next_pow2(num_features, 16))


def as_index(t: torch.Tensor) -> torch.Tensor:
    """Indices as contiguous int64 (kernels index with 64-bit offsets)."""
    return t.to(torch.int64).contiguous()


def scalars(ref: torch.Tensor, *values: float) -> torch.Tensor:
    """Float constants as a small tensor of ``ref``'s dtype and device.

    Kernel float arguments are passed as fp32 by Triton, and Python float literals inside kernels are
    fp32 constants; loading constants from a tensor keeps float64 kernels exact.
    """
    return torch.tensor(values, dtype=ref.dtype, device=ref.device)


def rows_of(ptr: torch.Tensor, nnz: int) -> torch.Tensor:
    """The segment (row) of each entry of a CSR pointer, int64 ``[nnz]``."""
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), counts,
                                   output_size=nnz)


def transpose_csr(idx: torch.Tensor, num_rows: int):
    """Transposed CSR of an index vector: ``perm`` (a stable argsort of ``idx``) and ``tptr``
    (``[num_rows + 1]``), so the entries with ``idx == m`` are ``perm[tptr[m]:tptr[m+1]]`` in their
    original order. Deterministic: the gradient kernels built on it need no atomics."""
    perm = torch.sort(idx, stable=True).indices
    counts = torch.bincount(idx, minlength=num_rows)
    tptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=idx.device)
    torch.cumsum(counts, 0, out=tptr[1:])
    return perm, tptr
