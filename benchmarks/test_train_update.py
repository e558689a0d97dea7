"""The trainer's parameter update (gradient clipping + Adam + EMA) on PAMNet's QM9-preset parameters.

Baseline: what the trainer did before (per-parameter Adam, clipping with torch's default, an EMA loop
of two in-place ops per tensor). Against it: foreach Adam, and fused Adam (``pamnet_fast.train.optim``,
the trainer's default), both with foreach clipping and the one-call foreach EMA. Same gradients, same
update; the cases check that the three agree.
"""
import pytest
import torch

import _data
from pamnet_fast import nn as pnn
from pamnet_fast.train import EMA
from pamnet_fast.train.optim import make_adam

IMPLS = ("loop (previous trainer)", "foreach", "fused")


def _per_tensor_ema(ema: EMA, model, decay: float) -> None:
    with torch.no_grad():
        src = model.state_dict()
        for name, t in ema.module.state_dict().items():
            t.mul_(decay).add_(src[name], alpha=1.0 - decay) if t.dtype.is_floating_point else t.copy_(src[name])


def _setup(impl: str):
    torch.manual_seed(0)
    cfg = pnn.PAMNetConfig.qm9(**({"dim": 32, "n_layer": 2} if _data.quick() else {}))
    model = pnn.PAMNet(cfg)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    loop = impl.startswith("loop")
    opt = make_adam(params, 1e-4, impl="loop" if loop else impl)
    ema = EMA(model, decay=0.999, warmup=False)

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1000.0, foreach=None if loop else True)
        opt.step()
        if loop:
            _per_tensor_ema(ema, model, 0.999)
        else:
            ema.update(model)
    return model, params, update


@pytest.mark.parametrize("impl", IMPLS)
def test_train_update(benchmark, impl):
    model, params, update = _setup(impl)
    benchmark.group = "trainer update: clip + Adam + EMA (PAMNet QM9 preset)"
    benchmark.extra_info.update(impl=impl, baseline=impl.startswith("loop"), tensors=len(params),
                                parameters=sum(p.numel() for p in params), threads=torch.get_num_threads())
    calls = []
    benchmark.pedantic(lambda: (calls.append(1), update()), rounds=3 if _data.quick() else 20, warmup_rounds=1)
    # the same update as the previous trainer's after the same number of steps
    ref_model, _, ref_update = _setup(IMPLS[0])
    for _ in calls:
        ref_update()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
