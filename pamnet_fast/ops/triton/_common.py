"""Shared helpers of the Triton kernels: interpreter detection, precise math, launch utilities."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
import triton.testing

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


# --- The segment kernels (segment_gather_mul, fused_edge_message): tiles, by rule or autotuned ---
#
# One program per (segment, feature tile of BLOCK_F columns); it walks its segment SEGMENT_BLOCK entries
# at a time (a [16, BLOCK_F] tile of row loads) and writes its output tile once.
#
# Tile by rule (default): BLOCK_F = F rounded up to a power of two, between 32 and 128, and
# BLOCK_F / 32 warps: 16 elements per thread, one program covers F <= 128 (each gathered row is read
# whole, coalesced), wider F takes 128-column tiles. The rule matters for reproducibility: how a
# [16, BLOCK_F] tile is spread over threads and warps sets the order in which its 16 entries are
# added, so a configuration chosen by timing (which can differ from process to process) could give
# different bits for the same inputs. By rule, the bits depend only on F and the dtype.
#
# PAMNET_FAST_TRITON_AUTOTUNE=1 (read at import) instead lets triton.autotune pick among at most
# three tiles/warps per F, keyed on F, a size class and the dtypes: possibly faster, reproducible
# within a process but not guaranteed bit-identical across processes. The interpreter (CI) always
# uses the rule.
SEGMENT_BLOCK = 16
AUTOTUNE = os.environ.get("PAMNET_FAST_TRITON_AUTOTUNE", "0") not in ("", "0") and not INTERPRET

# One pipeline stage: the loops' gathers are not software-pipelined by Triton (no shared memory in
# the sm_90 cubins at the default 3 stages), so more stages would only add compilations.
SEGMENT_CONFIGS = [triton.Config({"BLOCK_F": bf}, num_warps=w, num_stages=1)
                   for bf, w in ((32, 1), (64, 2), (128, 4), (128, 8), (256, 8))]


def segment_tile(num_features: int):
    """``(BLOCK_F, num_warps)`` of the rule above."""
    block_f = min(128, next_pow2(num_features, 32))
    return block_f, block_f // 32


def _prune_segment_configs(configs, named_args, **kwargs):
    """Keep feature tiles from half of F (rounded up to a power of two, at least 32) up to F: wider
    tiles would only mask lanes, narrower ones re-read the segment's indices once per tile. At most
    three configurations per F, each compiled and timed once per process."""
    full = next_pow2(named_args["num_features"], 32)
    kept = [c for c in configs if max(32, full // 2) <= c.kwargs["BLOCK_F"] <= full]
    return kept or configs[-1:]


class _TileByRule:
    """``kernel[grid](*args, **kw)`` with ``BLOCK_F`` and ``num_warps`` from :func:`segment_tile` (the
    same launch syntax as the autotuned kernel: ``grid`` may be a function of the meta-parameters)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self._features = kernel.arg_names.index("num_features")

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            block_f, warps = segment_tile(args[self._features])
            g = grid({"BLOCK_F": block_f}) if callable(grid) else grid
            return self.kernel[g](*args, BLOCK_F=block_f, num_warps=warps, **kwargs)
        return launch


def segment_kernel(kernel):
    """``kernel`` with its tile by rule, or autotuned over :data:`SEGMENT_CONFIGS` with
    PAMNET_FAST_TRITON_AUTOTUNE=1 (keyed on ``num_features``, ``size_class`` and the dtypes of the
    tensor arguments; every kernel only stores, never accumulates into, its outputs, so the timing
    runs leave nothing to reset)."""
    if not AUTOTUNE:
        return _TileByRule(kernel)
    return triton.autotune(SEGMENT_CONFIGS, key=["num_features", "size_class"],
                           prune_configs_by={"early_config_prune": _prune_segment_configs},
                           do_bench=_tuning_bench)(kernel)


def _tuning_bench(kernel_call, quantiles):
    # Shorter than Triton's default (25 ms warm-up, 100 ms of repeats per configuration): every new
    # (F, size class, dtype) tunes once per process, and the differences sought are not subtle.
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


def size_class(nnz: int, num_rows: int) -> int:
    """Autotuning key of a segment launch: the entry count in factors of 4 and the mean segment length
    in factors of 2 (the best tile differs between 1e5 and 1e7 entries, and between bond graphs with
    2 neighbors and radius graphs with 40)."""
    return (int(nnz).bit_length() // 2) * 64 + (int(nnz) // max(int(num_rows), 1)).bit_length()


def segment_grid(num_rows: int, num_features: int):
    return lambda meta: (num_rows, triton.cdiv(num_features, meta["BLOCK_F"]))


# Launch option of the segment kernels (num_warps comes from the tile rule or the configuration).
TUNED_LAUNCH = dict(enable_fp_fusion=True)


def accumulator(t: torch.Tensor):
    """The ``ACC`` constexpr of the segment kernels: float64 sums for float64 inputs, float32 for
    float32, float16 and bfloat16 (inputs are widened on load; outputs are stored in their own dtype)."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def as_index(t: torch.Tensor) -> torch.Tensor:
    """Indices as contiguous int64 (kernels index with 64-bit offsets)."""
    return t.to(torch.int64).contiguous()


def scalars(ref: torch.Tensor, *values: float) -> torch.Tensor:
    """Float constants as a small tensor of ``ref``'s dtype and device.

    Kernel float arguments are passed as fp32 by Triton, and Python float literals inside kernels are
    fp32 constants; loading constants from a tensor keeps float64 kernels exact.
    """
    return torch.tensor(values, dtype=ref.dtype, device=ref.device)


# --- Value checks of CSR inputs in one kernel and one device-to-host read ---

CHECK_BLOCK = 1024


@triton.jit
def _csr_check_kernel(ptr_ptr, num_ptr, nnz, a_ptr, num_a, upper_a, b_ptr, num_b, upper_b, flag_ptr,
                      BLOCK: tl.constexpr):
    """flag |= 1 if ``ptr`` does not start at 0, end at ``nnz`` and never decrease, or an entry of
    ``a`` (``b``) is outside ``[0, upper_a)`` (``[0, upper_b)``). Integer OR: order-independent."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_ptr = i < num_ptr
    cur = tl.load(ptr_ptr + i, mask=in_ptr, other=0)
    nxt = tl.load(ptr_ptr + i + 1, mask=i + 1 < num_ptr, other=nnz)
    bad = in_ptr & (((i == 0) & (cur != 0)) | ((i == num_ptr - 1) & (cur != nnz)) | (cur > nxt))
    a = tl.load(a_ptr + i, mask=i < num_a, other=0)
    bad = bad | ((i < num_a) & ((a < 0) | (a >= upper_a)))
    b = tl.load(b_ptr + i, mask=i < num_b, other=0)
    bad = bad | ((i < num_b) & ((b < 0) | (b >= upper_b)))
    tl.atomic_or(flag_ptr, tl.max(bad.to(tl.int32), axis=0))


def check_csr(op: str, ptr_name: str, ptr: torch.Tensor, nnz: int, *indices) -> None:
    """:func:`pamnet_fast.ops.checks.csr_and_indices` for int64 ``ptr`` and (at most two) int64 index
    vectors ``(name, idx, upper)``: one check kernel and one device-to-host read of its flag, instead
    of a dozen small torch kernels; only a bad input runs the detailed checks that name the problem."""
    from .. import checks
    checks.not_capturing(op, ptr)
    if ptr.numel() == 0:
        raise ValueError(f"{op}: {ptr_name} must have at least one entry (ptr[0] = 0)")
    (_, a, upper_a), (_, b, upper_b) = (list(indices) + [("", ptr[:0], 0)] * 2)[:2]
    flag = torch.zeros(1, dtype=torch.int32, device=ptr.device)
    size = max(ptr.numel(), a.numel(), b.numel())
    _csr_check_kernel[(triton.cdiv(size, CHECK_BLOCK),)](
        ptr, ptr.numel(), nnz, a, a.numel(), upper_a, b, b.numel(), upper_b, flag, BLOCK=CHECK_BLOCK)
    if int(flag.item()):
        checks.csr_and_indices(op, ptr_name, ptr, nnz, *indices)
        raise AssertionError(f"{op}: the check kernel flagged the input but no detailed check did")
