"""The op library: schemas, registrations (opcheck), torch.compile, backends, and the fallback."""
import os
import subprocess
import sys

import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import library

from _ops_util import random_csr

EXTENSION = ops.backend("radius_graph") == "cpp"


@pytest.mark.skipif(not EXTENSION, reason="compiled extension not loaded")
def test_cpp_schemas_match_python_schemas():
    from torch._C import parse_schema
    for name, schema in library.SCHEMAS.items():
        op = getattr(torch.ops.pamnet_fast, name).default
        assert str(op._schema) == str(parse_schema(f"pamnet_fast::{schema}")), name


def test_backend_reports_every_op():
    table = ops.backend()
    assert set(table) == set(library.FORWARD_OPS)
    for name, devices in table.items():
        assert devices["cpu"] in ("cpp", "reference")
        assert devices["cuda"] in ("triton", "reference")
    with pytest.raises(ValueError, match="unknown op"):
        ops.backend("nope")


def _samples():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(20, 3, generator=g, dtype=torch.float64) * 1.5
    ei, ptr = ops.radius_graph(pos, 2.0, return_ptr=True)
    src, sptr = random_csr(6, 5, 20, g)
    d = torch.rand(12, generator=g, dtype=torch.float64) * 4 + 0.1
    ang = torch.rand(12, generator=g, dtype=torch.float64) * 3
    e = ei.size(1)
    rg = dict(requires_grad=True)
    return {
        "radius_graph": (pos, 2.0, None, False, -1, False),
        "knn_graph": (pos, 4, None, 2.5, False),
        "triplets": (ei, 20, False),
        "triplets_with_sizes": (ei, 20, False, True, [len(t) for t in ops.triplets(ei, 20)[::3]]),
        "segment_gather_mul": (torch.randn(5, 3, dtype=torch.float64, **rg), src,
                               torch.randn(20, 3, dtype=torch.float64, **rg), sptr),
        "fused_edge_message": tuple(torch.randn(n, 4, dtype=torch.float64, **rg) for n in (20, 20, e, e))
                              + (ptr, ei[0]),
        # rows of r and s shared by edges (edge_row)
        "fused_edge_message_shared_rows": tuple(torch.randn(n, 4, dtype=torch.float64, **rg)
                                                for n in (20, 20, 5, 5))
                                          + (ptr, ei[0], torch.arange(e) % 5),
        # the backward's transposed CSRs, built once (ops.transposed_csr)
        "fused_edge_message_with_transposes": tuple(torch.randn(n, 4, dtype=torch.float64, **rg)
                                                    for n in (20, 20, 5, 5))
                                              + (ptr, ei[0], torch.arange(e) % 5, True,
                                                 ops.transposed_csr(ei[0], 20, ptr),
                                                 ops.transposed_csr(torch.arange(e) % 5, 5, ptr)),
        # edge_message has fused_edge_message's inputs (its output is per edge)
        "edge_message": tuple(torch.randn(n, 4, dtype=torch.float64, **rg) for n in (20, 20, e, e))
                        + (ptr, ei[0]),
        "edge_message_shared_rows": tuple(torch.randn(n, 4, dtype=torch.float64, **rg) for n in (20, 20, 5, 5))
                                    + (ptr, ei[0], torch.arange(e) % 5),
        "edge_message_with_transposes": tuple(torch.randn(n, 4, dtype=torch.float64, **rg)
                                              for n in (20, 20, 5, 5))
                                        + (ptr, ei[0], torch.arange(e) % 5, True,
                                           ops.transposed_csr(ei[0], 20, ptr),
                                           ops.transposed_csr(torch.arange(e) % 5, 5, ptr)),
        "segment_gather_mul_with_transpose": (torch.randn(5, 3, dtype=torch.float64, **rg), src,
                                              torch.randn(20, 3, dtype=torch.float64, **rg), sptr, True,
                                              ops.transposed_csr(src, 5, sptr)),
        "bessel_basis": (d.clone().requires_grad_(), torch.arange(1.0, 5.0, dtype=torch.float64,
                                                                    **rg), 5.0, 5),
        "spherical_basis": (d.clone().requires_grad_(), ang.clone().requires_grad_(),
                            ops.spherical_bessel_zeros(3, 2), 5.0, 5),
    }


@pytest.mark.parametrize("name", library.FORWARD_OPS + (
    "fused_edge_message_shared_rows", "fused_edge_message_with_transposes", "edge_message_shared_rows",
    "edge_message_with_transposes", "segment_gather_mul_with_transpose", "triplets_with_sizes"))
def test_opcheck(name):
    op = getattr(torch.ops.pamnet_fast, next(n for n in library.FORWARD_OPS if name.startswith(n)))
    args = _samples()[name]
    tests = ["test_schema", "test_autograd_registration", "test_faketensor"]
    if name not in ("radius_graph", "knn_graph", "triplets"):
        # ops with data-dependent output sizes cannot run under aot_dispatch_dynamic's checks
        tests.append("test_aot_dispatch_dynamic")
    torch.library.opcheck(op, args, test_utils=tests)


class TinyMessageLayer(torch.nn.Module):
    def __init__(self, f=8):
        super().__init__()
        self.lin = torch.nn.Linear(f, 3 * f)
        self.rbf = torch.nn.Linear(6, f)

    def forward(self, x, pos, edge_index, ptr):
        dist = (pos[edge_index[1]] - pos[edge_index[0]]).norm(dim=-1)
        e = self.rbf(ops.bessel_basis(dist, 3.0, 6))
        p, q, s = self.lin(x).chunk(3, dim=-1)
        h = ops.fused_edge_message(p, q, e, e, ptr, edge_index[0])
        return ops.segment_gather_mul(h, edge_index[0], e, ptr).sum()


def test_torch_compile_fullgraph_module_using_the_ops():
    torch._dynamo.reset()
    pos = torch.randn(30, 3) * 1.5
    edge_index, ptr = ops.radius_graph(pos, 2.5, return_ptr=True)
    layer = TinyMessageLayer()
    x = torch.randn(30, 8, requires_grad=True)
    eager = layer(x, pos, edge_index, ptr)
    eager.backward()
    g_eager = x.grad.clone()
    x.grad = None
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x, pos, edge_index, ptr)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, g_eager, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_with_graph_construction():
    torch._dynamo.reset()

    def f(pos):
        ei, dist = ops.radius_graph(pos, 2.0, return_dist=True)
        return dist.sum() + ei.size(1)

    pos = torch.randn(25, 3)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(pos), f(pos))


def test_fallback_to_reference_ops_warns_once_and_works():
    code = (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import pamnet_fast\n"
        "from pamnet_fast import ops\n"
        "msgs = [str(x.message) for x in w if 'reference ops' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert ops.backend('segment_gather_mul') == 'reference'\n"
        "pos = torch.randn(30, 3)\n"
        "ei = ops.radius_graph(pos, 2.0)\n"
        "t = ops.triplets(ei, 30)\n"
        "x = torch.randn(30, 4, requires_grad=True)\n"
        "ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(ei[1], minlength=30).cumsum(0)])\n"
        "ops.segment_gather_mul(x, ei[0], torch.randn(ei.size(1), 4), ptr).sum().backward()\n"
        "print('fallback ok', ei.size(1), t.two_hop_kj.numel(), x.grad.shape)\n"
    )
    env = dict(os.environ, PAMNET_FAST_DISABLE_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout
