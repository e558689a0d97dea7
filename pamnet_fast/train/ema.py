"""Exponential moving average of model weights (used for validation, test and the saved model)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.module``, a copy of the model whose floating-point parameters/buffers are the
    EMA of the training model's.  With ``warmup=True`` the decay at update ``n`` is
    ``min(decay, (1 + n) / (10 + n))`` (as in DimeNet/PAMNet's reference code) so that short runs
    are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()
        self._paired = None

    def current_decay(self) -> float:
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    def _pairs(self, model: nn.Module):
        """(EMA floats, model floats, EMA others, model others): the state tensors paired by name,
        collected once per source model (parameters and buffers are updated in place, so they stay
        the same tensors)."""
        if self._paired is None or self._paired[0] is not model:
            src = model.state_dict(keep_vars=True)
            groups, seen = ([], [], [], []), set()
            for name, t in self.module.state_dict(keep_vars=True).items():
                if id(t) in seen:  # a tensor shared under two names is updated once
                    continue
                seen.add(id(t))
                k = 0 if t.dtype.is_floating_point else 2
                groups[k].append(t)
                groups[k + 1].append(src[name].detach())
            self._paired = (model, groups)
        return self._paired[1]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema <- ema + (1 - d) (model - ema)`` for every floating tensor, as one foreach call per
        dtype/device (no per-tensor kernels, no host synchronization); others are copied."""
        d = self.current_decay()
        ema_f, src_f, ema_o, src_o = self._pairs(model)
        if ema_f:
            torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        if ema_o:
            torch._foreach_copy_(ema_o, src_o)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates,
                "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
