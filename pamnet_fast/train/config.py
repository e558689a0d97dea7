"""Training hyper-parameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TrainConfig:
    """Defaults follow the PAMNet paper's QM9 settings (except ``standardize``/``element_ref`` and EMA
    warm-up, which only help short runs)."""
    epochs: int = 900
    batch_size: int = 32            # global batch (per-process batch = batch_size / world size)
    eval_batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0      # linear warm-up
    decay_rate: float = 0.1         # lr *= decay_rate ** (step / (decay_epochs * steps_per_epoch))
    decay_epochs: float = 600.0
    decay_staircase: bool = False   # step decay: lr *= decay_rate ** floor(epoch / decay_epochs)
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: Optional[float] = 1000.0
    loss: str = "l1"                # "l1" | "mse" | "smooth_l1"
    standardize: bool = True        # model predicts (y - baseline) / std of the residual (target_norm.py)
    element_ref: bool = True        # baseline = per-element linear fit on the training set (else the mean)
    patience: Optional[int] = 100   # early stopping on val MAE, in epochs (None: off)
    max_time: Optional[float] = None  # seconds, counted from ``time_origin`` (see Trainer)
    checkpoint_every: int = 1000    # steps (0: only at epoch ends and at the end)
    seed: int = 0                   # data order (sampler) seed
    device: str = "cpu"
    num_workers: int = 0
    quiet: bool = False
    progress: Optional[bool] = None  # None: tqdm bars only when stderr is a TTY and not quiet
    target_index: Optional[int] = None  # column of data.y to learn (None: all columns)
    target_name: str = "target"
    unit: str = ""
    plots: bool = True
    precision: str = "fp32"         # "fp32" | "bf16" (autocast, fp32 weights and loss) | "fp64" (precision.py)
    compile: bool = False           # torch.compile(model, dynamic=True) for the training forward
    optimizer_impl: str = "auto"    # Adam: "auto" (fused on CUDA/CPU, else foreach) | "fused" | "foreach" | "loop"
