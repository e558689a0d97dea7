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

    def current_decay(self) -> float:
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        src = model.state_dict()
        for name, t in self.module.state_dict().items():
            s = src[name]
            if t.dtype.is_floating_point:
                t.mul_(d).add_(s.detach(), alpha=1.0 - d)
            else:
                t.copy_(s)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates,
                "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
