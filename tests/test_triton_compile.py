"""The Triton kernels compiled for sm_90 (no GPU needed): registers, spills, no FMA in distances.

The compilation runs in a subprocess without ``TRITON_INTERPRET`` (``conftest.py`` sets it for the
other tests when there is no GPU).
"""
import pytest

triton = pytest.importorskip("triton")

pytestmark = pytest.mark.triton


# The interpreter is lenient, the compiler is not.

_COMPILE_SCRIPT = r'''
import importlib, json, re, sys, warnings
warnings.simplefilter("ignore")
import os, subprocess, tempfile
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
mods = {m: importlib.import_module("pamnet_fast.ops.triton." + m)
        for m in ("neighbors", "neighbor_grid", "triplets", "segment", "message", "basis", "dense",
                  "_common")}
I = "*i64"
F32, F64 = tl.float32, tl.float64
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
def registers(cubin):
    """(registers, local-memory bytes: spills and stack) of a cubin, read by cuobjdump (n_regs and
    n_spills of a compiled kernel are only filled in when it is loaded on a GPU)."""
    if not cubin or not os.path.exists(CUOBJDUMP):
        return None, None
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as fh:
        fh.write(cubin)
    log = subprocess.run([CUOBJDUMP, "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    os.unlink(fh.name)
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", log)
    return (int(found.group(1)), int(found.group(2)) + int(found.group(3))) if found else (None, None)
def case(mod, name, fp, types, constexprs, fusion=True, warps=None):
    fn = getattr(mods[mod], name)
    sig = {a: ("constexpr" if a in constexprs else types.get(a, fp)) for a in fn.arg_names}
    cx = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    tag = ",".join(f"{k}={v}" for k, v in constexprs.items()
                   if k in ("FILL", "SORT", "SEG", "TILED", "HAS_X", "HAS_IY", "HAS_ROW", "BY_ROW", "NEED_R", "BLOCK_N", "PER_EDGE", "G_PER_EDGE"))
    warps = warps or (8 if constexprs.get("SEG", 1) > 1024 else 4)
    return f"{name}[{fp}{';' + tag if tag else ''}]", ASTSource(fn, sig, constexprs=cx), {"enable_fp_fusion": fusion, "num_warps": warps}
scan = dict(key_ptr=I, order_ptr=I, row_ptr=I, dims_ptr=I, cell_start_ptr=I, r_bits="i32", active_ptr="*i1",
            ptr_ptr=I, count_ptr=I, totals_ptr=I, out_src_ptr=I, out_dst_ptr=I, n="i64")
scan_cx = dict(LOOP=False, HAS_ACTIVE=False, BLOCK_C=32)
graphs = dict(pos_ptr="*fp32", batch_ptr=I, h_bits="i64", dims_ptr=I, row_ptr=I, totals_ptr=I, n="i64",
              tiles_ptr="*fp32", num_tiles="i64")
dense = dict(M="i32", N="i32", K="i32", stride_wn="i32", stride_wk="i32")
dense_cx = dict(HAS_BIAS=True, HAS_RES=True, SILU=True, DOT_F32=False, BLOCK_M=32, BLOCK_N=128, BLOCK_K=32)
cases = [
    case("neighbor_grid", "_graphs_kernel", "*fp64", graphs, dict(HAS_BATCH=True, TILED=False, ROWS=16, BLOCK=1024), False, 8),
    case("neighbor_grid", "_graphs_kernel", "*fp64", graphs, dict(HAS_BATCH=False, TILED=True, ROWS=16, BLOCK=1024), False, 8),
    case("neighbor_grid", "_tiles_kernel", "*fp32", dict(row_ptr=I, totals_ptr=I, n="i64"), dict(BLOCK=1024), True, 8),
    case("neighbor_grid", "_bin_kernel", "*fp64", dict(pos_ptr="*fp32", row_ptr=I, dims_ptr=I, key_ptr=I, n="i64"), dict(BLOCK=256), False),
    case("neighbor_grid", "_slots_kernel", "*fp32", dict(order_ptr=I, key_ptr=I, cell_start_ptr=I, n="i64", num_cells="i64", steps="i32"), dict(BLOCK=256), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=False, SORT=False, WITH_DIST=False, IS_F64=False, BLOCK_T=16, SEG=1), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=True, SORT=True, WITH_DIST=False, IS_F64=False, BLOCK_T=16, SEG=64), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=True, SORT=True, WITH_DIST=False, IS_F64=False, BLOCK_T=1, SEG=2048, BLOCK_C=256), False),
    case("neighbors", "_scan_kernel", "*fp64", dict(scan, r_bits="i64"), dict(scan_cx, FILL=True, SORT=False, WITH_DIST=True, IS_F64=True, BLOCK_T=32, SEG=1, HAS_ACTIVE=True), False),
    case("triplets", "_triplet_kernel", I, dict(num_edges="i64", total="i64"), dict(TWO_HOP=True, KEEP_SELF=False, FILL=True, BLOCK_E=32, BLOCK_K=32)),
    case("segment", "gather_mul_sum_kernel", "*fp32", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_X=True, HAS_IY=False, BLOCK_S=16, BLOCK_F=128)),
    case("segment", "gather_mul_sum_kernel", "*bf16", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_X=True, HAS_IY=True, BLOCK_S=16, BLOCK_F=128)),
    case("segment", "gather_mul_sum_kernel", "*fp64", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F64, HAS_X=False, HAS_IY=True, BLOCK_S=16, BLOCK_F=64)),
    case("segment", "_scale_rows_kernel", "*fp32", dict(src_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_fwd_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=False, PER_EDGE=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_fwd_kernel", "*bf16", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, PER_EDGE=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_fwd_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, PER_EDGE=True, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_segment_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=False, G_PER_EDGE=False, NEED_P=True, NEED_R=True, NEED_S=True, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_segment_kernel", "*fp16", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, G_PER_EDGE=False, NEED_P=True, NEED_R=False, NEED_S=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_segment_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, G_PER_EDGE=True, NEED_P=True, NEED_R=False, NEED_S=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_transposed_kernel", "*fp32", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BY_ROW=False, HAS_ROW=True, G_PER_EDGE=False, NEED_A=True, NEED_B=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_transposed_kernel", "*fp64", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F64, BY_ROW=True, HAS_ROW=True, G_PER_EDGE=False, NEED_A=True, NEED_B=True, BLOCK_S=16, BLOCK_F=64)),
    case("message", "_bwd_transposed_kernel", "*fp32", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BY_ROW=True, HAS_ROW=True, G_PER_EDGE=True, NEED_A=True, NEED_B=True, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_transposed_kernel", "*fp32", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BY_ROW=False, HAS_ROW=True, G_PER_EDGE=True, NEED_A=True, NEED_B=False, BLOCK_S=16, BLOCK_F=128)),
    case("dense", "_linear_act_kernel", "*fp32", dense, dense_cx),
    case("dense", "_linear_act_kernel", "*bf16", dense, dense_cx),
    case("dense", "_linear_act_kernel", "*fp32", dense, dict(dense_cx, BLOCK_N=16)),
    case("_common", "_csr_check_kernel", I, dict(num_ptr="i64", nnz="i64", num_a="i64", upper_a="i64", num_b="i64", upper_b="i64", flag_ptr="*i32"), dict(BLOCK=1024)),
    case("basis", "_bessel_kernel", "*fp32", dict(num_edges="i32", num_radial="i32", p="i32"), dict(BACKWARD=True, NEED_DIST=True, NEED_FREQ=True, NUM_SERIES=9, BLOCK_E=64, BLOCK_N=8)),
    case("basis", "_spherical_kernel", "*fp32", dict(l_ptr="*i32", num_rows="i32", num_cols="i32", num_l="i32", p="i32"), dict(BACKWARD=False, NEED_DIST=False, NEED_ANGLE=False, NUM_TERMS=30, BLOCK_T=32, BLOCK_C=64)),
    case("basis", "_spherical_kernel", "*fp64", dict(l_ptr="*i32", num_rows="i32", num_cols="i32", num_l="i32", p="i32"), dict(BACKWARD=True, NEED_DIST=True, NEED_ANGLE=True, NUM_TERMS=30, BLOCK_T=8, BLOCK_C=64)),
]
out = {}
for name, src, opts in cases:
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
        ptx = kernel.asm["ptx"]
        regs, spills = registers(kernel.asm.get("cubin"))
        out[name] = {"ok": True, "fma": len(re.findall(r"\bfma\.", ptx)),
                     "atomics": len(re.findall(r"\b(?:atom|red)\.", ptx)),
                     "mma": len(re.findall(r"\b(?:w?gmma|mma)\.", ptx)), "tf32": "tf32" in ptx,
                     "sqrt": sorted(set(re.findall(r"\bsqrt\.[\w.]+", ptx))),
                     "regs": regs, "spills": spills}
    except Exception as exc:
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
print("RESULT " + json.dumps(out))
'''


_MESSAGE_KERNELS = ("gather_mul_sum_kernel", "_scale_rows_kernel", "_fwd_kernel", "_bwd_segment_kernel",
                    "_bwd_transposed_kernel", "_linear_act_kernel")


def test_kernels_compile_for_sm90_and_neighbor_search_has_no_fma():
    """Compile the kernels to PTX for an H100 (sm_90) in a process without TRITON_INTERPRET: catches
    what only the compiler rejects, and checks that the neighbor-search distance has no FMA and an
    IEEE square root (the GPU edge set then equals the CPU's bit for bit), and that the message
    and dense kernels have no atomics and no register spills (registers per kernel: run with -s), and
    that the dense GEMM is full float32 for float32 (no TF32) and on tensor cores for bfloat16."""
    import json
    import os
    import pathlib
    import subprocess
    import sys
    import triton.backends
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this Triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    failed = {k: v["error"] for k, v in result.items() if not v["ok"]}
    assert not failed, failed
    print({k: (v["regs"], v["spills"]) for k, v in result.items()})
    for name in (k for k in result if k.split("[")[0] in _MESSAGE_KERNELS):
        assert result[name]["atomics"] == 0, result[name]  # deterministic sums
        assert result[name]["spills"] in (0, None), result[name]
    for name in (k for k in result if k.startswith("_linear_act_kernel")):
        assert not result[name]["tf32"] and (result[name]["mma"] > 0) == ("bf16" in name), result[name]
    for name in (k for k in result if k.startswith("_scan_kernel")):
        assert result[name]["fma"] == 0, result[name]
        assert result[name]["sqrt"] and all(".rn." in s for s in result[name]["sqrt"]), result[name]
