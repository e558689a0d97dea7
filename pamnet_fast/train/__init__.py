"""Training: :class:`Trainer` (EMA, early stopping, time budget, exact resume, DDP)."""
from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .ema import EMA
from .config import TrainConfig
from .trainer import Trainer, dataset_targets

__all__ = ["Trainer", "TrainConfig", "EMA", "CheckpointMismatchError", "load_checkpoint",
           "save_checkpoint", "dataset_targets"]
