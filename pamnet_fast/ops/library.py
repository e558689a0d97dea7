"""The ``torch.ops.pamnet_fast`` custom ops: schemas, backends, fake kernels and autograd formulas.

One public op per name, with one implementation per device behind it:

* CPU: the C++/OpenMP kernels of the compiled extension ``pamnet_fast._C`` (which defines the schemas
  with ``TORCH_LIBRARY``). If the extension is missing or fails to load, this module defines the same
  schemas and serves every device with the plain-PyTorch reference twins, after one warning.
* CUDA: the Triton kernels of :mod:`pamnet_fast.ops.triton` when Triton is importable, else the
  reference twins.

Fake (meta) kernels and autograd formulas are registered here, once, for every backend, so
``torch.compile(fullgraph=True)`` traces through the ops and gradients flow through them.

The ops whose checks read tensor values (index ranges, CSR pointers, sorted batches, finite inputs)
end their schema with ``bool check_values=True``; every backend honours it (``False``: only shapes,
dtypes and devices are checked, and a CUDA call reads nothing back from the device).
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, Optional

import torch

from . import checks, reference, validate

NAMESPACE = "pamnet_fast"

# The op schemas; csrc/register.cpp defines the same strings (a test checks they agree).
SCHEMAS: Dict[str, str] = {
    "radius_graph": "radius_graph(Tensor pos, float r, Tensor? batch, bool loop, "
                    "int max_num_neighbors, bool truncate, bool check_values=True) -> (Tensor, Tensor)",
    "knn_graph": "knn_graph(Tensor pos, int k, Tensor? batch, float? r, bool loop) -> (Tensor, Tensor)",
    "triplets": "triplets(Tensor edge_index, int num_nodes, bool include_self_pairs, bool check_values=True, "
                "int[]? sizes=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "segment_gather_mul": "segment_gather_mul(Tensor a, Tensor src, Tensor b, Tensor ptr, "
                          "bool check_values=True, Tensor? src_transpose=None) -> Tensor",
    "segment_gather_mul_backward": "segment_gather_mul_backward(Tensor grad_out, Tensor a, Tensor src, "
                                   "Tensor b, Tensor ptr, bool need_a, bool need_b, "
                                   "Tensor? src_transpose=None) -> (Tensor, Tensor)",
    "fused_edge_message": "fused_edge_message(Tensor p, Tensor q, Tensor r, Tensor s, Tensor ptr, "
                          "Tensor src, Tensor? edge_row=None, bool check_values=True, "
                          "Tensor? src_transpose=None, Tensor? row_transpose=None) -> Tensor",
    "fused_edge_message_backward": "fused_edge_message_backward(Tensor grad_out, Tensor p, Tensor q, "
                                   "Tensor r, Tensor s, Tensor ptr, Tensor src, Tensor? edge_row, "
                                   "bool[4] output_mask, Tensor? src_transpose=None, "
                                   "Tensor? row_transpose=None) -> (Tensor, Tensor, Tensor, Tensor)",
    "edge_message": "edge_message(Tensor p, Tensor q, Tensor r, Tensor s, Tensor ptr, Tensor src, "
                    "Tensor? edge_row=None, bool check_values=True, Tensor? src_transpose=None, "
                    "Tensor? row_transpose=None) -> Tensor",
    "edge_message_backward": "edge_message_backward(Tensor grad_out, Tensor p, Tensor q, Tensor r, "
                             "Tensor s, Tensor ptr, Tensor src, Tensor? edge_row, bool[4] output_mask, "
                             "Tensor? src_transpose=None, Tensor? row_transpose=None) "
                             "-> (Tensor, Tensor, Tensor, Tensor)",
    "bessel_basis": "bessel_basis(Tensor dist, Tensor freq, float cutoff, int envelope_exponent, "
                    "bool check_values=True) -> Tensor",
    "bessel_basis_backward": "bessel_basis_backward(Tensor grad_out, Tensor dist, Tensor freq, "
                             "float cutoff, int envelope_exponent, bool need_dist, bool need_freq) "
                             "-> (Tensor, Tensor)",
    "spherical_basis": "spherical_basis(Tensor dist, Tensor angle, Tensor zeros, float cutoff, "
                       "int envelope_exponent, bool check_values=True) -> Tensor",
    "spherical_basis_backward": "spherical_basis_backward(Tensor grad_out, Tensor dist, Tensor angle, "
                                "Tensor zeros, float cutoff, int envelope_exponent, bool need_dist, "
                                "bool need_angle) -> (Tensor, Tensor)",
}

FORWARD_OPS = ("radius_graph", "knn_graph", "triplets", "segment_gather_mul", "fused_edge_message",
               "edge_message", "bessel_basis", "spherical_basis")

_EXTENSION_ERROR: Optional[str] = None
_TRITON_ERROR: Optional[str] = None
_libraries = []  # keep torch.library.Library objects alive


def _load_extension() -> bool:
    global _EXTENSION_ERROR
    if os.environ.get("PAMNET_FAST_DISABLE_EXTENSION") == "1":
        _EXTENSION_ERROR = "disabled by PAMNET_FAST_DISABLE_EXTENSION=1"
        return False
    try:
        from .. import _C  # noqa: F401  (importing runs TORCH_LIBRARY registration)
    except Exception as exc:  # ImportError, or an undefined symbol from an ABI mismatch
        _EXTENSION_ERROR = f"{type(exc).__name__}: {exc}"
        return False
    return True


# --- Reference implementations with the op schemas (fallback on every device, CUDA without Triton) ---

def _grad_of(fn, inputs, grad_out, needs):
    """Backward of a reference forward by autograd: the reference twin of every backward kernel."""
    leaves = [t.detach().requires_grad_(n) if n else t.detach() for t, n in zip(inputs, needs)]
    with torch.enable_grad():
        out = fn(*leaves)
        wanted = [t for t, n in zip(leaves, needs) if n]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True) if wanted else ())
    result = []
    for t, n in zip(leaves, needs):
        g = next(grads) if n else None
        result.append(torch.zeros_like(t) if n and g is None else (g if n else t.new_empty(0)))
    return result


def _ref_radius_graph(pos, r, batch, loop, max_num_neighbors, truncate, check_values=True):
    validate.radius_graph(pos, r, batch, max_num_neighbors, values=check_values)
    return reference.radius_graph(pos, r, None if batch is None else batch.long(), loop,
                                  max_num_neighbors, truncate)


def _ref_knn_graph(pos, k, batch, r, loop):
    validate.knn_graph(pos, k, batch, r)
    return reference.knn_graph(pos, k, None if batch is None else batch.long(), r, loop)


def _ref_triplets(edge_index, num_nodes, include_self_pairs, check_values=True, sizes=None):
    validate.triplets(edge_index, num_nodes, values=check_values, sizes=sizes)
    out = reference.triplets(edge_index, num_nodes, include_self_pairs)
    checks.triplet_sizes_match("triplets", sizes, out[0].numel(), out[3].numel())
    return out


def _ref_segment_gather_mul(a, src, b, ptr, check_values=True, src_transpose=None):
    validate.segment_gather_mul(a, src, b, ptr, values=check_values, src_transpose=src_transpose)
    return reference.segment_gather_mul(a, src.long(), b, ptr.long())


def _ref_segment_gather_mul_backward(grad_out, a, src, b, ptr, need_a, need_b, src_transpose=None):
    ga, _, gb, _ = _grad_of(lambda a_, s_, b_, p_: reference.segment_gather_mul(a_, s_, b_, p_),
                            (a, src.long(), b, ptr.long()), grad_out, (need_a, False, need_b, False))
    return ga, gb


def _ref_fused_edge_message(p, q, r, s, ptr, src, edge_row=None, check_values=True, src_transpose=None,
                            row_transpose=None):
    validate.fused_edge_message(p, q, r, s, ptr, src, edge_row, values=check_values,
                                src_transpose=src_transpose, row_transpose=row_transpose)
    return reference.fused_edge_message(p, q, r, s, ptr.long(), src.long(), edge_row)


def _ref_fused_edge_message_backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask,
                                     src_transpose=None, row_transpose=None):
    grads = _grad_of(lambda p_, q_, r_, s_: reference.fused_edge_message(p_, q_, r_, s_, ptr.long(),
                                                                         src.long(), edge_row),
                     (p, q, r, s), grad_out, tuple(output_mask))
    return tuple(grads)


def _ref_edge_message(p, q, r, s, ptr, src, edge_row=None, check_values=True, src_transpose=None,
                      row_transpose=None):
    validate.fused_edge_message(p, q, r, s, ptr, src, edge_row, values=check_values,
                                src_transpose=src_transpose, row_transpose=row_transpose, op="edge_message")
    return reference.edge_message(p, q, r, s, ptr.long(), src.long(), edge_row)


def _ref_edge_message_backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask, src_transpose=None,
                               row_transpose=None):
    grads = _grad_of(lambda p_, q_, r_, s_: reference.edge_message(p_, q_, r_, s_, ptr.long(), src.long(),
                                                                   edge_row),
                     (p, q, r, s), grad_out, tuple(output_mask))
    return tuple(grads)


def _ref_bessel_basis(dist, freq, cutoff, envelope_exponent, check_values=True):
    validate.bessel_basis(dist, freq, cutoff, envelope_exponent, values=check_values)
    return reference.bessel_basis(dist, freq, cutoff, envelope_exponent)


def _ref_bessel_basis_backward(grad_out, dist, freq, cutoff, envelope_exponent, need_dist, need_freq):
    return tuple(_grad_of(lambda d, f: reference.bessel_basis(d, f, cutoff, envelope_exponent),
                          (dist, freq), grad_out, (need_dist, need_freq)))


def _ref_spherical_basis(dist, angle, zeros, cutoff, envelope_exponent, check_values=True):
    validate.spherical_basis(dist, angle, zeros, cutoff, envelope_exponent, values=check_values)
    return reference.spherical_basis(dist, angle, zeros, cutoff, envelope_exponent)


def _ref_spherical_basis_backward(grad_out, dist, angle, zeros, cutoff, envelope_exponent, need_dist,
                                  need_angle):
    return tuple(_grad_of(lambda d, a: reference.spherical_basis(d, a, zeros, cutoff, envelope_exponent),
                          (dist, angle), grad_out, (need_dist, need_angle)))


REFERENCE_IMPLS = {
    "radius_graph": _ref_radius_graph,
    "knn_graph": _ref_knn_graph,
    "triplets": _ref_triplets,
    "segment_gather_mul": _ref_segment_gather_mul,
    "segment_gather_mul_backward": _ref_segment_gather_mul_backward,
    "fused_edge_message": _ref_fused_edge_message,
    "fused_edge_message_backward": _ref_fused_edge_message_backward,
    "edge_message": _ref_edge_message,
    "edge_message_backward": _ref_edge_message_backward,
    "bessel_basis": _ref_bessel_basis,
    "bessel_basis_backward": _ref_bessel_basis_backward,
    "spherical_basis": _ref_spherical_basis,
    "spherical_basis_backward": _ref_spherical_basis_backward,
}


# --- Fake kernels: output metadata only, for torch.compile / FakeTensor tracing ---

def _fake_graph(pos, *args):
    num_edges = torch.library.get_ctx().new_dynamic_size()
    return (pos.new_empty((2, num_edges), dtype=torch.long),
            pos.new_empty((pos.size(0) + 1,), dtype=torch.long))


def _fake_triplets(edge_index, num_nodes, include_self_pairs, check_values=True, sizes=None):
    if sizes is None:
        ctx = torch.library.get_ctx()
        t2, t1 = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    else:
        t2, t1 = sizes
    e = edge_index.size(1)
    new = edge_index.new_empty
    return (new((t2,), dtype=torch.long), new((t2,), dtype=torch.long), new((e + 1,), dtype=torch.long),
            new((t1,), dtype=torch.long), new((t1,), dtype=torch.long), new((e + 1,), dtype=torch.long))


def _fake_segment_gather_mul(a, src, b, ptr, check_values=True, src_transpose=None):
    return a.new_empty((ptr.size(0) - 1, a.size(1)))


def _fake_segment_gather_mul_backward(grad_out, a, src, b, ptr, need_a, need_b, src_transpose=None):
    return (torch.empty_like(a) if need_a else a.new_empty(0),
            torch.empty_like(b) if need_b else b.new_empty(0))


def _fake_fused_edge_message(p, q, r, s, ptr, src, edge_row=None, check_values=True, src_transpose=None,
                             row_transpose=None):
    return p.new_empty((ptr.size(0) - 1, p.size(1)))


def _fake_fused_edge_message_backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask,
                                      src_transpose=None, row_transpose=None):
    return tuple(torch.empty_like(t) if m else t.new_empty(0) for t, m in zip((p, q, r, s), output_mask))


def _fake_edge_message(p, q, r, s, ptr, src, edge_row=None, check_values=True, src_transpose=None,
                       row_transpose=None):
    return p.new_empty((src.size(0), p.size(1)))


def _fake_bessel_basis(dist, freq, cutoff, envelope_exponent, check_values=True):
    return dist.new_empty((dist.size(0), freq.size(0)))


def _fake_bessel_basis_backward(grad_out, dist, freq, cutoff, envelope_exponent, need_dist, need_freq):
    return (torch.empty_like(dist) if need_dist else dist.new_empty(0),
            torch.empty_like(freq) if need_freq else freq.new_empty(0))


def _fake_spherical_basis(dist, angle, zeros, cutoff, envelope_exponent, check_values=True):
    return dist.new_empty((dist.size(0), zeros.size(0) * zeros.size(1)))


def _fake_spherical_basis_backward(grad_out, dist, angle, zeros, cutoff, envelope_exponent, need_dist,
                                   need_angle):
    return (torch.empty_like(dist) if need_dist else dist.new_empty(0),
            torch.empty_like(angle) if need_angle else angle.new_empty(0))


FAKE_IMPLS = {
    "radius_graph": _fake_graph,
    "knn_graph": _fake_graph,
    "triplets": _fake_triplets,
    "segment_gather_mul": _fake_segment_gather_mul,
    "segment_gather_mul_backward": _fake_segment_gather_mul_backward,
    "fused_edge_message": _fake_fused_edge_message,
    "fused_edge_message_backward": _fake_fused_edge_message_backward,
    "edge_message": _fake_edge_message,
    "edge_message_backward": _fake_fused_edge_message_backward,
    "bessel_basis": _fake_bessel_basis,
    "bessel_basis_backward": _fake_bessel_basis_backward,
    "spherical_basis": _fake_spherical_basis,
    "spherical_basis_backward": _fake_spherical_basis_backward,
}


# --- Autograd formulas (backward ops are themselves custom ops, first-order only) ---

def _ops():
    return getattr(torch.ops, NAMESPACE)


def _segment_gather_mul_setup(ctx, inputs, output):
    a, src, b, ptr, _, src_transpose = inputs  # (defaults filled)
    ctx.save_for_backward(a, src, b, ptr, src_transpose)


def _segment_gather_mul_bwd(ctx, grad):
    a, src, b, ptr, src_t = ctx.saved_tensors
    need_a, _, need_b = ctx.needs_input_grad[:3]
    ga, gb = _ops().segment_gather_mul_backward(grad.contiguous(), a, src, b, ptr, need_a, need_b, src_t)
    return (ga if need_a else None), None, (gb if need_b else None), None, None, None


def _fused_edge_message_setup(ctx, inputs, output):
    # p, q, r, s, ptr, src, edge_row, src_transpose, row_transpose (defaults filled; None allowed)
    ctx.save_for_backward(*inputs[:7], *inputs[8:10])


def _edge_message_bwd_of(backward_op: str):
    """The autograd formula of ``fused_edge_message`` or ``edge_message`` (the same inputs; their
    backward ops differ in the gradient's rows: per target or per edge)."""
    def backward(ctx, grad):
        p, q, r, s, ptr, src, edge_row, src_t, row_t = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:4])
        grads = getattr(_ops(), backward_op)(grad.contiguous(), p, q, r, s, ptr, src, edge_row, mask,
                                             src_t, row_t)
        return tuple(g if m else None for g, m in zip(grads, mask)) + (None,) * 6
    return backward


def _bessel_basis_setup(ctx, inputs, output):
    dist, freq, cutoff, envelope_exponent = inputs[:4]
    ctx.save_for_backward(dist, freq)
    ctx.cutoff, ctx.envelope_exponent = cutoff, envelope_exponent


def _bessel_basis_bwd(ctx, grad):
    dist, freq = ctx.saved_tensors
    need_dist, need_freq = ctx.needs_input_grad[:2]
    gd, gf = _ops().bessel_basis_backward(grad.contiguous(), dist, freq, ctx.cutoff,
                                          ctx.envelope_exponent, need_dist, need_freq)
    return (gd if need_dist else None), (gf if need_freq else None), None, None, None


def _spherical_basis_setup(ctx, inputs, output):
    dist, angle, zeros, cutoff, envelope_exponent = inputs[:5]
    ctx.save_for_backward(dist, angle, zeros)
    ctx.cutoff, ctx.envelope_exponent = cutoff, envelope_exponent


def _spherical_basis_bwd(ctx, grad):
    dist, angle, zeros = ctx.saved_tensors
    need_dist, need_angle = ctx.needs_input_grad[:2]
    gd, ga = _ops().spherical_basis_backward(grad.contiguous(), dist, angle, zeros, ctx.cutoff,
                                             ctx.envelope_exponent, need_dist, need_angle)
    return (gd if need_dist else None), (ga if need_angle else None), None, None, None, None


AUTOGRAD = {
    "segment_gather_mul": (_segment_gather_mul_bwd, _segment_gather_mul_setup),
    "fused_edge_message": (_edge_message_bwd_of("fused_edge_message_backward"), _fused_edge_message_setup),
    "edge_message": (_edge_message_bwd_of("edge_message_backward"), _fused_edge_message_setup),
    "bessel_basis": (_bessel_basis_bwd, _bessel_basis_setup),
    "spherical_basis": (_spherical_basis_bwd, _spherical_basis_setup),
}


# --- Registration ---

def _register() -> Dict[str, Dict[str, str]]:
    global _TRITON_ERROR
    have_extension = _load_extension()
    backends = {name: {} for name in SCHEMAS}
    if have_extension:
        for name in SCHEMAS:
            backends[name]["cpu"] = "cpp"
    else:
        warnings.warn(
            "pamnet_fast: the compiled extension pamnet_fast._C could not be loaded "
            f"({_EXTENSION_ERROR}); using the plain-PyTorch reference ops, which are much slower. "
            "Rebuild with: pip install --no-build-isolation -e .", RuntimeWarning, stacklevel=3)
        lib = torch.library.Library(NAMESPACE, "DEF")
        _libraries.append(lib)
        for name, schema in SCHEMAS.items():
            lib.define(schema)
            lib.impl(name, REFERENCE_IMPLS[name], "CPU")
            backends[name]["cpu"] = "reference"

    triton_impls = {}
    try:
        from . import triton as triton_ops
        triton_impls = triton_ops.KERNELS
    except Exception as exc:  # Triton not installed, or no GPU driver
        _TRITON_ERROR = f"{type(exc).__name__}: {exc}"
    for name in SCHEMAS:
        qualname = f"{NAMESPACE}::{name}"
        impl = triton_impls.get(name)
        torch.library.register_kernel(qualname, "cuda", impl or REFERENCE_IMPLS[name])
        backends[name]["cuda"] = "triton" if impl else "reference"
        torch.library.register_fake(qualname, FAKE_IMPLS[name])
        if name in AUTOGRAD:
            backward, setup = AUTOGRAD[name]
            torch.library.register_autograd(qualname, backward, setup_context=setup)
    return backends


# The ops that do floating-point arithmetic; under torch.autocast they run in float32.
AUTOCAST_FP32_OPS = ("segment_gather_mul", "fused_edge_message", "edge_message", "bessel_basis",
                     "spherical_basis")


def register_autocast_fp32() -> None:
    """Under ``torch.autocast`` (CPU and CUDA) the float ops receive float32 inputs and return float32.

    Their sums over edges and triplets, and the basis functions (sin, Bessel zeros, envelopes), need
    float32 accumulation: bf16's 8-bit mantissa would lose whole digits over a few dozen terms. The
    surrounding dense layers still run in the autocast dtype; float64 inputs are left as they are.
    """
    for name in AUTOCAST_FP32_OPS:
        for device_type in ("cpu", "cuda"):
            if torch.amp.is_autocast_available(device_type):
                torch.library.register_autocast(f"{NAMESPACE}::{name}", device_type, torch.float32)


_BACKENDS = _register()
register_autocast_fp32()


def backend(op: Optional[str] = None, device: str = "cpu"):
    """Which implementation serves each op: ``'cpp'`` (C++/OpenMP), ``'triton'`` or ``'reference'``.

    ``backend()`` returns ``{op: {device: name}}`` for all public ops; ``backend('radius_graph')`` the
    name for one op on ``device`` (``'cpu'`` or ``'cuda'``).
    """
    if op is None:
        return {name: dict(_BACKENDS[name]) for name in FORWARD_OPS}
    if op not in _BACKENDS:
        raise ValueError(f"backend: unknown op {op!r}; ops are {', '.join(FORWARD_OPS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"backend: device must be 'cpu' or 'cuda', got {device!r}")
    return _BACKENDS[op][device]


def extension_error() -> Optional[str]:
    """Why the compiled extension is not in use (``None`` when it is)."""
    return _EXTENSION_ERROR
