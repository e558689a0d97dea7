"""Training loop: Adam + warm-up/exponential decay, L1 loss, EMA, early stopping, time budget,
exact resume from atomic checkpoints, DDP (torchrun), metrics files and plots.

The step is free of host synchronizations of its own: fused Adam (:mod:`.optim`), foreach gradient
clipping and EMA, and the running loss/MAE summed on the device and read at epoch ends, checkpoints
and (at most once a second) for the progress bar. ``precision`` (fp32 | bf16 | fp64, see
:mod:`.precision`) and ``compile`` (:func:`compile_model`) are options of :class:`TrainConfig`."""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch_geometric.loader import DataLoader

from . import dist as D
from .checkpoint import (CheckpointMismatchError, check_compatible, get_rng_state, load_checkpoint,
                         model_config_of, save_checkpoint, set_rng_state)
from .config import TrainConfig
from .ema import EMA
from .optim import load_optimizer_state, make_adam
from .precision import Precision
from .metrics import regression_metrics
from .target_norm import TargetNormalizer, dataset_compositions, unwrap_subsets
from .plots import plot_learning_curves, plot_parity, write_metrics, write_predictions


def dataset_targets(ds, target_index: Optional[int]) -> torch.Tensor:
    """Targets [n, k] (float64) of a dataset (fast path for (nested) Subsets of a dataset with .y)."""
    base, idx = unwrap_subsets(ds)
    y = getattr(base, "y", None)
    if isinstance(y, torch.Tensor) and y.dim() == 2 and y.shape[0] == len(base):
        y = y if idx is None else y[idx]
    else:
        y = torch.cat([ds[i].y.reshape(1, -1) for i in range(len(ds))], 0) if len(ds) else torch.zeros(0, 1)
    y = y.double()
    if target_index is not None:
        y = y[:, target_index:target_index + 1]
    return y


def compile_model(module: nn.Module):
    """PAMNet / PAMNet-s: :func:`pamnet_fast.nn.compile_model` (graphs built outside, the forward one
    graph, ``fullgraph=True``); other models: ``torch.compile(module, dynamic=True)``. One graph for
    every batch size (molecule and edge counts change every batch). The module itself is unchanged, so
    checkpoints hold its state dict (no ``_orig_mod.`` prefixes)."""
    if hasattr(module, "forward_tensors") and getattr(module, "max_memory", None) is None:
        from ..nn import compile_model as compile_pamnet
        return compile_pamnet(module)
    return torch.compile(module, dynamic=True)


def _baseline_note(res: dict, unit: str) -> str:
    if "test_mae_element_baseline" not in res:
        return ""
    return f"; the per-element linear baseline alone: {res['test_mae_element_baseline']:.4g}{unit}"


class Trainer:
    """Train ``model`` (any nn.Module mapping a PyG batch to [num_graphs, out_dim]).

    Args:
        model: the model (on CPU; moved to ``config.device``).
        train_set, val_set, test_set: datasets of PyG ``Data`` with ``y`` [1, k].
        config: :class:`TrainConfig`.
        out_dir: where checkpoint.pt, model.pt, metrics.{csv,json}, plots and predictions go
            (None: nothing written).
        model_name, model_config: stored in checkpoints and checked on resume (``model_config``
            defaults to ``model.config``).
        time_origin: ``time.time()`` from which ``config.max_time`` counts (default: start of fit).
    """

    def __init__(self, model: nn.Module, train_set, val_set=None, test_set=None,
                 config: Optional[TrainConfig] = None, out_dir=None, model_name: Optional[str] = None,
                 model_config: Optional[dict] = None, time_origin: Optional[float] = None,
                 log: Callable[[str], None] = print, meta: Optional[dict] = None):
        self.cfg = config or TrainConfig()
        self.model = model
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_name = model_name
        self.model_config = model_config if model_config is not None else model_config_of(model)
        self.time_origin = time_origin
        self._log = log
        self.meta = dict(meta or {})  # stored in checkpoints (e.g. dataset/split description)
        self.info = D.DistInfo()
        self.precision = Precision(self.cfg.precision)  # an unknown name fails here, before any work
        self._hooks = []  # callables(trainer, step) after each optimisation step (tests)

    # ------------------------------------------------------------------ utils
    def log(self, msg: str) -> None:
        if self.info.is_main and not self.cfg.quiet:
            self._log(msg)

    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.out_dir / "checkpoint.pt" if self.out_dir is not None else None

    def _target(self, batch) -> torch.Tensor:
        y = batch.y
        if y.dim() == 1:
            y = y[:, None]
        if self.cfg.target_index is not None:
            y = y[:, self.cfg.target_index:self.cfg.target_index + 1]
        return y

    def _to_device(self, batch):
        """The batch on the training device (asynchronously from pinned memory on CUDA), with its
        floating tensors in the run's precision."""
        return self.precision.batch(batch.to(self.device, non_blocking=self.device.type == "cuda"))

    def _predict(self, module, batch) -> torch.Tensor:
        with self.precision.autocast(self.device):
            out = module(batch)
        out = self.precision.output(out)
        if out.dim() == 1:
            out = out[:, None]
        return out

    def _loss(self, pred, target):
        if self.cfg.loss == "l1":
            return torch.nn.functional.l1_loss(pred, target)
        if self.cfg.loss == "mse":
            return torch.nn.functional.mse_loss(pred, target)
        if self.cfg.loss == "smooth_l1":
            return torch.nn.functional.smooth_l1_loss(pred, target)
        raise ValueError(f"unknown loss {self.cfg.loss!r}; valid: l1, mse, smooth_l1")

    def _auxiliary_loss(self):
        """A model's extra training loss: ``model.auxiliary_loss()`` after its forward, if it has one."""
        fn = getattr(self.module, "auxiliary_loss", None)
        return fn() if callable(fn) else None

    def _progress_enabled(self) -> bool:
        if self.cfg.quiet or not self.info.is_main:
            return False
        return sys.stderr.isatty() if self.cfg.progress is None else bool(self.cfg.progress)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, module: nn.Module, dataset, return_predictions: bool = False) -> dict:
        """MAE (original units) of ``module`` on ``dataset``; sharded over ranks under DDP."""
        if dataset is None or len(dataset) == 0:
            return {"mae": float("nan"), "n": 0}
        t0 = time.perf_counter()
        rng = D.shard(len(dataset), self.info)
        loader = DataLoader(Subset(dataset, list(rng)), batch_size=self.cfg.eval_batch_size,
                            shuffle=False, num_workers=self.cfg.num_workers)
        was_training = module.training
        module.eval()
        # |error|, count, |error| of the baseline alone; summed on the device, read once at the end
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        rows = []
        pos = rng.start
        for batch in loader:
            batch = self._to_device(batch)
            y = self._target(batch).double()
            base = self.norm.baseline(batch, y.device)
            pred = self.norm.denormalize(self._predict(module, batch), batch, base)
            sums[0] += (pred - y).abs().sum()
            sums[1] += y.numel()
            sums[2] += (base - y).abs().sum()
            if return_predictions:
                ids = batch.idx.tolist() if hasattr(batch, "idx") and batch.idx is not None else \
                    list(range(pos, pos + y.shape[0]))
                for k in range(y.shape[0]):
                    rows.append((pos + k, ids[k], y[k].tolist(), pred[k].tolist()))
            pos += y.shape[0]
        module.train(was_training)
        sums = D.all_reduce_sum(sums.cpu(), self.info)
        n = float(sums[1])
        out = {"mae": float(sums[0]) / n if n > 0 else float("nan"), "n": int(n),
               "mae_baseline": float(sums[2]) / n if n > 0 else float("nan"),
               "seconds": time.perf_counter() - t0}
        if return_predictions:
            allrows = [r for part in D.all_gather_objects(rows, self.info) for r in part]
            allrows.sort(key=lambda r: r[0])
            out["rows"] = allrows
        return out

    # ------------------------------------------------------------------ checkpoints
    def _state(self, finished: bool = False, results: Optional[dict] = None) -> dict:
        rng_states = D.all_gather_objects(get_rng_state(), self.info)
        return {
            "model_name": self.model_name, "model_config": self.model_config, "meta": self.meta,
            "model": self.module.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": rng_states, "epoch": self.epoch, "step": self.step,
            "sampler": {"seed": self.cfg.seed, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                        "global_batch": self.cfg.batch_size, "world_size": self.info.world_size},
            "accum": dict(self.accum), "best": dict(self.best), "best_state": self.best_state,
            "bad_epochs": self.bad_epochs, "history": list(self.history),
            "norm": self.norm.state_dict(),
            "train_config": dataclasses.asdict(self.cfg), "finished": finished, "results": results,
        }

    def save(self, finished: bool = False, results: Optional[dict] = None) -> None:
        self._flush_accum()
        state = self._state(finished, results)  # collective under DDP: every rank calls save()
        if self.info.is_main and self.checkpoint_path is not None:
            save_checkpoint(state, self.checkpoint_path)

    def _load(self, path: Path) -> dict:
        st = load_checkpoint(path)
        check_compatible(st, self.model_name, self.model_config, self.module.state_dict(), path)
        s = st["sampler"]
        if s["global_batch"] != self.cfg.batch_size or s["seed"] != self.cfg.seed:
            raise CheckpointMismatchError(
                f"{path} was written with batch size {s['global_batch']} and seed {s['seed']}; resuming "
                f"needs the same (got batch size {self.cfg.batch_size}, seed {self.cfg.seed})")
        ck_ti = st["train_config"].get("target_index")
        if ck_ti != self.cfg.target_index:
            raise CheckpointMismatchError(f"{path} was trained on target column {ck_ti}, not "
                                          f"{self.cfg.target_index}")
        self.module.load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        load_optimizer_state(self.optimizer, st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        self.batch_in_epoch = int(s["batch_in_epoch"])
        self.accum = dict(st["accum"])
        self.best = dict(st["best"])
        self.best_state = st["best_state"]
        self.bad_epochs = int(st["bad_epochs"])
        self.history = list(st["history"])
        self.norm = TargetNormalizer.from_state_dict(st["norm"])
        rngs = st["rng"]
        set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        return st

    # ------------------------------------------------------------------ training step
    def _train_step(self, net: nn.Module, batch) -> None:
        """Forward, backward, clipping, Adam, schedule and EMA on one batch; the running sums go to
        ``self._acc`` on the device (no host synchronization here)."""
        cfg = self.cfg
        batch = self._to_device(batch)
        y = self._target(batch)
        base = self.norm.baseline(batch, y.device)
        yn = self.norm.normalize(y, batch, base)
        pred = self._predict(net, batch)
        if pred.shape != yn.shape:
            raise ValueError(f"model output shape {tuple(pred.shape)} does not match the "
                             f"target shape {tuple(yn.shape)}")
        loss = self._loss(pred, yn.to(pred.dtype))
        with self.precision.autocast(self.device):
            aux = self._auxiliary_loss()
        nb = y.numel()
        if aux is not None:  # e.g. PhysChem's lambda * conformation loss
            aux = aux.to(loss.dtype)
            loss = loss + aux
            self._has_aux = True
            self._acc[3] += aux.detach().double() * nb
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._update()
        self._acc[0] += loss.detach().double() * nb
        self._acc[1] += (self.norm.denormalize(pred.detach(), batch, base) - y.double()).abs().sum()
        self._acc[2] += nb
        self.step += 1
        self.batch_in_epoch += 1

    def _update(self) -> None:
        """Gradient clipping, the optimizer and scheduler steps and the EMA update: foreach/fused
        kernels over all parameters at once, no host synchronization."""
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.module)

    def _flush_accum(self) -> None:
        """Add the device-side running sums into ``self.accum`` (one device->host read)."""
        acc = getattr(self, "_acc", None)
        if acc is None:
            return
        loss, abs_err, n, aux = acc.tolist()
        self.accum["loss"] += loss
        self.accum["abs"] += abs_err
        self.accum["n"] += n
        if self._has_aux:
            self.accum["aux"] = self.accum.get("aux", 0.0) + aux
        acc.zero_()

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        t_start = time.time()
        origin = self.time_origin if self.time_origin is not None else t_start
        deadline = origin + cfg.max_time if cfg.max_time else None
        self._t_origin = origin
        self.info = D.init_distributed(cfg.device)
        try:
            return self._fit(resume, deadline)
        finally:
            D.cleanup(self.info)

    def _fit(self, resume: bool, deadline: Optional[float]) -> dict:
        cfg, info = self.cfg, self.info
        dev = cfg.device
        if dev.startswith("cuda") and info.enabled and ":" not in dev:
            dev = f"cuda:{info.local_rank}"
        self.device = torch.device(dev)
        self.precision.check_device(self.device)
        self.module = self.precision.module(self.model.to(self.device))
        net = self.module
        if info.enabled:
            net = DistributedDataParallel(self.module, device_ids=[self.device.index]
                                          if self.device.type == "cuda" else None)
        if cfg.compile:
            net = compile_model(net)
        # target normalisation from the training set
        ytr = dataset_targets(self.train_set, cfg.target_index)
        comp = dataset_compositions(self.train_set) if cfg.standardize and cfg.element_ref else None
        self.norm = TargetNormalizer.fit(ytr, comp, cfg.standardize, cfg.element_ref)

        sampler = D.ResumableBatchSampler(len(self.train_set), cfg.batch_size, info, seed=cfg.seed)
        spe = sampler.batches_per_epoch()
        if spe == 0:
            raise ValueError(f"training set of {len(self.train_set)} samples is smaller than one "
                             f"batch of {cfg.batch_size}")
        warm = max(1, int(round(cfg.warmup_epochs * spe)))
        decay_steps = max(1e-9, cfg.decay_epochs * spe)
        self.optimizer = make_adam(self.module.parameters(), cfg.lr, cfg.weight_decay, cfg.optimizer_impl)
        stair = math.floor if cfg.decay_staircase else (lambda v: v)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) * cfg.decay_rate ** stair(s / decay_steps))
        self.ema = EMA(self.module, cfg.ema_decay, cfg.ema_warmup)
        self.epoch = self.step = self.batch_in_epoch = 0
        self.accum = {"loss": 0.0, "abs": 0.0, "n": 0.0, "seconds": 0.0}
        self._acc = torch.zeros(4, dtype=torch.float64, device=self.device)  # see _flush_accum
        self._has_aux = False
        self.best = {"val_mae": math.inf, "epoch": -1, "step": -1}
        self.best_state = None
        self.bad_epochs = 0
        self.history = []
        resumed = None
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            resumed = self._load(self.checkpoint_path)
            self.log(f"resumed from {self.checkpoint_path} at epoch {self.epoch}, step {self.step}")
            why = (resumed.get("results") or {}).get("stop_reason")
            if resumed.get("finished") and (why == "early_stopping" or
                                             (why == "epochs" and self.epoch >= cfg.epochs)):
                self.log("checkpoint is of a finished run; nothing to do")
                return resumed["results"]
            self.history = [h for h in self.history if not h.get("partial")]
        elif resume:
            self.log("no checkpoint to resume from; starting from scratch")

        gen = torch.Generator()  # keeps DataLoader from consuming the global RNG
        self.log(f"training {self.model_name or type(self.module).__name__} on {len(self.train_set)} "
                 f"samples: {spe} steps/epoch, global batch {cfg.batch_size} on {info.world_size} "
                 f"process(es), device {self.device}")
        stop_reason = None
        sec_per_step = None
        eval_sec_per_sample = None
        n_eval = (len(self.val_set) if self.val_set is not None else 0) + \
            (len(self.test_set) if self.test_set is not None else 0)
        self._params = [p for p in self.module.parameters() if p.requires_grad]
        pin = self.device.type == "cuda"  # pinned host batches copy to the GPU without a sync
        t_bar = 0.0
        net.train()
        while self.epoch < cfg.epochs and stop_reason is None:
            sampler.set_epoch(self.epoch, self.batch_in_epoch)
            loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                generator=gen, pin_memory=pin)
            bar = None
            if self._progress_enabled():
                from tqdm import tqdm
                bar = tqdm(total=spe, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}",
                           leave=False, dynamic_ncols=True)
            t_ep = time.perf_counter()
            for batch in loader:
                t0 = time.perf_counter()
                try:
                    self._train_step(net, batch)
                except Exception as e:  # say when it is torch.compile's (its errors name no option)
                    if cfg.compile and hasattr(e, "add_note"):
                        e.add_note("pamnet-fast: raised in a training step under torch.compile "
                                   "(--compile / TrainConfig.compile); the model trains without it")
                    raise
                dt = time.perf_counter() - t0
                sec_per_step = dt if sec_per_step is None else 0.9 * sec_per_step + 0.1 * dt
                if bar is not None:
                    bar.update(1)
                    if time.perf_counter() - t_bar > 1.0:  # reading the loss waits for the device
                        t_bar = time.perf_counter()
                        loss_sum, _, n = (self._acc[:3].cpu() + torch.tensor(
                            [self.accum["loss"], self.accum["abs"], self.accum["n"]], dtype=torch.float64)).tolist()
                        bar.set_postfix(loss=f"{loss_sum / max(1, n):.4g}")
                for h in self._hooks:
                    h(self, self.step)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.accum["seconds"] += time.perf_counter() - t_ep
                    t_ep = time.perf_counter()
                    self.save()
                if deadline is not None:
                    per_sample = eval_sec_per_sample if eval_sec_per_sample is not None else \
                        sec_per_step / max(1, cfg.batch_size // info.world_size) / 2.5
                    reserve = 1.15 * per_sample * n_eval / info.world_size + 2 * sec_per_step + 1.0
                    if D.broadcast_flag(time.time() + reserve > deadline, info):
                        stop_reason = "max_time"
                        break
            if bar is not None:
                bar.close()
            self.accum["seconds"] += time.perf_counter() - t_ep
            self._flush_accum()
            partial = stop_reason is not None
            if partial and self.batch_in_epoch == 0:
                break
            # ---- end of (possibly partial) epoch: validate the EMA model
            tr = D.all_reduce_sum(torch.tensor([self.accum["loss"], self.accum["abs"], self.accum["n"]],
                                               dtype=torch.float64), info)
            val = self.evaluate(self.ema.module, self.val_set)
            if val["n"]:
                eval_sec_per_sample = val["seconds"] / max(1, val["n"] / info.world_size)
            row = {"epoch": self.epoch + 1, "step": self.step,
                   "train_loss": float(tr[0] / tr[2]) if tr[2] else float("nan"),
                   "train_mae": float(tr[1] / tr[2]) if tr[2] else float("nan"),
                   "val_mae": val["mae"], "lr": self.optimizer.param_groups[0]["lr"],
                   "epoch_time": self.accum["seconds"], "val_time": val.get("seconds", 0.0),
                   "elapsed": time.time() - self._t_origin}
            if "aux" in self.accum and tr[2]:
                row["train_aux_loss"] = self.accum["aux"] / float(tr[2]) if info.world_size == 1 else \
                    float(D.all_reduce_sum(torch.tensor([self.accum["aux"]], dtype=torch.float64), info)[0] / tr[2])
            if partial:
                row["partial"] = True
            improved = val["n"] > 0 and val["mae"] < self.best["val_mae"]
            if improved or (val["n"] == 0 and not partial):
                self.best = {"val_mae": val["mae"] if val["n"] else math.inf, "epoch": self.epoch + 1,
                             "step": self.step}
                self.best_state = {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}
                self.bad_epochs = 0
            elif not partial:
                self.bad_epochs += 1
            self.history.append(row)
            eta = ""
            if deadline is not None:
                eta = f" | budget left {max(0.0, deadline - time.time()) / 60:.1f} min"
            elif not partial:
                eta = f" | ETA {(cfg.epochs - self.epoch - 1) * (row['epoch_time'] + row['val_time']) / 60:.1f} min"
            u = f" {cfg.unit}" if cfg.unit else ""
            self.log(f"epoch {self.epoch + 1}{' (partial)' if partial else ''}/{cfg.epochs} step "
                     f"{self.step} | train loss {row['train_loss']:.4g} (MAE {row['train_mae']:.4g}{u}) | "
                     f"val MAE {row['val_mae']:.4g}{u} | lr {row['lr']:.3g} | "
                     f"{row['epoch_time'] + row['val_time']:.1f} s | best {self.best['val_mae']:.4g} "
                     f"@ epoch {self.best['epoch']}{eta}")
            if not partial:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.accum = {"loss": 0.0, "abs": 0.0, "n": 0.0, "seconds": 0.0}
            if self.info.is_main and self.out_dir is not None:
                write_metrics(self.history, self.out_dir)
            if not partial:
                if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                    stop_reason = "early_stopping"
                self.save()
        if stop_reason is None:
            stop_reason = "epochs"
        return self._finish(stop_reason)

    def _finish(self, stop_reason: str) -> dict:
        cfg = self.cfg
        final = self.ema.module
        if self.best_state is not None:
            final = copy.deepcopy(self.ema.module)
            final.load_state_dict(self.best_state)
        res = {"stop_reason": stop_reason, "epochs": self.epoch, "steps": self.step,
               "best_val_mae": self.best["val_mae"], "best_epoch": self.best["epoch"],
               "target": cfg.target_name, "unit": cfg.unit}
        test = self.evaluate(final, self.test_set, return_predictions=True)
        res["test_mae"] = test["mae"]
        res["test_n"] = test["n"]
        if test["n"]:
            yt = torch.tensor([r[2] for r in test["rows"]], dtype=torch.float64)
            res["test_mae_train_mean"] = float((yt - self.norm.train_mean).abs().mean())
            m = regression_metrics([r[2][0] for r in test["rows"]], [r[3][0] for r in test["rows"]])
            res.update({f"test_{k}": m[k] for k in ("rmse", "pearson_r", "spearman_rho", "sd")})
            if self.norm.element_ref is not None:
                res["test_mae_element_baseline"] = test["mae_baseline"]
        out = self.out_dir
        if self.info.is_main and out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if test["n"]:
                write_predictions(test["rows"], out / "test_predictions.csv")
            if cfg.plots:
                try:
                    plot_learning_curves(self.history, out / "learning_curves.png", cfg.unit,
                                         f"{self.model_name or ''} {cfg.target_name}".strip())
                    if test["n"]:
                        plot_parity([r[2][0] for r in test["rows"]], [r[3][0] for r in test["rows"]],
                                    out / "parity_test.png", cfg.unit,
                                    f"{cfg.target_name} test")
                except ImportError as e:  # matplotlib missing
                    self.log(f"plots skipped ({e}); pip install matplotlib")
            write_metrics([res], out, stem="results")
        self.save(finished=True, results=res)
        if self.info.is_main and out is not None:
            save_checkpoint({"kind": "model", "model_name": self.model_name, "model_config": self.model_config,
                             "meta": self.meta,
                             "model": {k: v.detach().cpu() for k, v in final.state_dict().items()},
                             "norm": self.norm.state_dict(),
                             "train_config": dataclasses.asdict(cfg), "results": res}, out / "model.pt")
        u = f" {cfg.unit}" if cfg.unit else ""
        if test["n"]:
            self.log(f"test MAE ({cfg.target_name}, EMA weights of best val epoch {self.best['epoch']}): "
                     f"{res['test_mae']:.4g}{u}  (predicting the training mean: "
                     f"{res['test_mae_train_mean']:.4g}{u}{_baseline_note(res, u)}); "
                     f"stopped by {stop_reason}")
        return res
