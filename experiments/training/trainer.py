"""The training loop: AMP, DDP, per-iteration schedules, checkpoints, resume, logging.

One ``Trainer`` trains one detector on one dataset. It works the same in one process and under
``torchrun`` (DistributedDataParallel, DistributedSampler; rank 0 alone writes files).
"""
from __future__ import annotations

import csv
import itertools
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler
from tqdm import tqdm

from experiments.data.collate import collate
from experiments.job.layout import last_checkpoint
from experiments.training.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from experiments.training.compiled import CompiledTrunk
from experiments.training.precision import resolve_precision, set_channels_last, uses_channels_last

log = logging.getLogger(__name__)
PROGRESS_S = 20.0   # seconds between progress lines without a progress bar: with one iteration's lag, under 30 s


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration."""


class TrainingInterrupted(KeyboardInterrupt):
    """``stop_requested()`` turned true: the checkpoint of ``iteration`` has been saved."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"training stopped at iteration {iteration}")
        self.iteration = iteration


class _SkipFirst(Sampler):
    """``sampler`` without its first ``skip`` indices (a resume inside an epoch): the wrapped
    sampler draws its order exactly as in the uninterrupted epoch."""

    def __init__(self, sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class Trainer:
    """Trains ``model`` (a ``detectors.base.Detector``) on ``dataset``.

    Args:
        optimizer: built over ``model.parameters()``.
        scheduler: a torch LR scheduler stepped once per iteration (milestones in iterations),
            or None.
        epochs: passes over the dataset; ``max_iterations`` (> 0) stops inside the last one, at
            that many optimizer steps (a budget resolved by ``experiments.training.budget``).
            ``max_time_s`` (when > 0) stops earlier, after the
            iteration that crosses it: the stop is logged, ``fit`` reports it
            (``stopped_on_time``, iterations run vs ``planned_iterations``) and the checkpoint
            keeps the position inside the epoch, so a resume trains the epoch's remaining
            batches.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (CUDA autocast with a GradScaler);
            where the device lacks it, fp32 with a warning, or a ValueError when
            ``precision_strict`` (``experiments.training.precision``). ``fit`` reports the one used.
        channels_last: convolution weights (and so activations) in NHWC (True) or NCHW (False)
            while training, set here before DDP wraps the model; None keeps the model's own (SSD's
            is NHWC, by its own ``channels_last``). After ``fit`` the model gets back the layout it
            came with, so evaluation and the speed protocol see the usual one.
        compile: the trunk under ``torch.compile`` while training, falling back to eager mode
            (a warning naming ``detector`` and the reason) when compiling fails
            (``experiments.training.compiled``); eager again after ``fit``.
        validate: called as ``validate(model) -> {"map": ..., "map_50": ...}`` every
            ``val_every`` epochs (0: never), and after each iteration listed in ``validate_at``,
            on every rank (``predict`` is collective under DDP:
            each rank predicts its share, rank 0 scores them all and alone writes the row).
        sync_batch_norm: under DDP, BatchNorm layers become ``nn.SyncBatchNorm`` (statistics
            over the whole batch of all ranks). ``"auto"``: on CUDA only (torch's SyncBatchNorm
            has no CPU kernel; on CPU each rank normalises its own share, which is logged and
            recorded as ``batch_norm``); True: required (an error on CPU); False: never.
        stop_requested: polled after every iteration (all ranks agree under DDP); when true, the
            trainer saves a checkpoint of that iteration and raises ``TrainingInterrupted``.
            A resume continues inside the epoch with the same image order (bit-exact with
            ``num_workers=0``; with workers, their augmentation draws restart).
        out_dir: where ``train_log.csv``, ``val_log.csv``, ``tensorboard/`` and
            ``checkpoints/last.pt`` go.
    """

    def __init__(self, model: nn.Module, dataset, optimizer: torch.optim.Optimizer,
                 scheduler, *, device: torch.device, epochs: int, batch_size: int,
                 out_dir: Path, seed: int = 0, num_workers: int = 0, precision: str = "fp32",
                 precision_strict: bool = False, channels_last: bool | None = None,
                 grad_clip: float = 0.0, log_every: int = 10, val_every: int = 0,
                 validate: Callable[[nn.Module], dict] | None = None, max_time_s: float = 0.0,
                 shuffle: bool = True, show_progress: bool | None = None,
                 stop_requested: Callable[[], bool] | None = None,
                 sync_batch_norm: bool | str = "auto", max_iterations: int = 0,
                 validate_at: tuple[int, ...] = (), compile: bool = False, detector: str = "",
                 compile_backend: str = "inductor") -> None:
        self.model, self.dataset = model, dataset
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device, self.epochs, self.batch_size = device, epochs, batch_size
        self.out_dir, self.seed, self.num_workers = Path(out_dir), seed, num_workers
        self.precision = resolve_precision(precision, device, precision_strict)
        self.channels_last, self.grad_clip, self.log_every = channels_last, grad_clip, log_every
        self.val_every, self.validate, self.max_time_s = val_every, validate, max_time_s
        self.shuffle, self.stop_requested = shuffle, stop_requested
        self.max_iterations, self.validate_at = max_iterations, frozenset(validate_at)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.is_main = self.rank == 0
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self.checkpoint_path = last_checkpoint(self.out_dir)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.used == "fp16")
        self.epoch, self.iteration, self.elapsed = 0, 0, 0.0
        self.epoch_step, self.last_loss = 0, math.nan   # batches done in this epoch; last loss
        self.train_model = model
        self.batch_norm = batch_norm_mode(model, self.distributed, device, sync_batch_norm)
        if self.batch_norm == "synchronised":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)   # in place; the parameters stay
        # NHWC before DDP wraps the model (its gradient buckets follow the parameters' layout)
        self.own_layout = uses_channels_last(model)
        self.channels_last = self.own_layout if channels_last is None else channels_last
        set_channels_last(model, self.channels_last)
        self.compiled = CompiledTrunk(model, compile, detector or type(model).__name__, compile_backend)
        if self.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)

    # -- data ---------------------------------------------------------------------------
    def loader(self, epoch: int) -> DataLoader:
        """This epoch's loader; its order depends only on (seed, epoch), so resume repeats it."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        # The order has its own generator: the loader draws worker seeds from ``generator``.
        order = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 50_000)
        if self.distributed:
            sampler = DistributedSampler(self.dataset, shuffle=self.shuffle, seed=self.seed)
            sampler.set_epoch(epoch)
        elif self.shuffle:
            sampler = RandomSampler(self.dataset, generator=order)
        else:
            sampler = SequentialSampler(self.dataset)
        # A last batch of one image would break BatchNorm on 1x1 maps: drop the remainder
        # whenever the dataset holds more than one batch (it is reshuffled every epoch).
        drop_last = len(self.dataset) > self.batch_size
        if self.epoch_step:
            sampler = _SkipFirst(sampler, self.epoch_step * self.batch_size)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=collate,
                          generator=generator, persistent_workers=False, drop_last=drop_last)

    def planned_iterations(self) -> int:
        """Iterations ``epochs`` full epochs take on this rank (remainder batches dropped)."""
        drop_last = len(self.dataset) > self.batch_size
        per_rank = math.ceil(len(self.dataset) / dist.get_world_size()) if self.distributed else len(self.dataset)
        per_epoch = per_rank // self.batch_size if drop_last else math.ceil(per_rank / self.batch_size)
        planned = self.epochs * per_epoch
        return min(planned, self.max_iterations) if self.max_iterations else planned

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict(), "rng": rng_states(),
                "epoch": self.epoch, "iteration": self.iteration, "elapsed_s": self.elapsed,
                "epoch_step": self.epoch_step, "loss": self.last_loss}

    def save(self) -> None:
        if self.is_main:
            save_checkpoint(self.checkpoint_path, self.state())
        if self.distributed:
            dist.barrier()

    def resume(self) -> None:
        """Continue from ``checkpoints/last.pt``; a missing or corrupt file is an error."""
        state = load_checkpoint(self.checkpoint_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_states(state["rng"])
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.elapsed = state.get("elapsed_s", 0.0)
        self.epoch_step, self.last_loss = state.get("epoch_step", 0), state.get("loss", math.nan)
        self._truncate_logs()
        log.info("resumed from %s at epoch %d, iteration %d", self.checkpoint_path,
                 self.epoch, self.iteration)

    def _truncate_logs(self) -> None:
        """Drop log rows written after the checkpoint, so a resumed log has no duplicates."""
        for name in ("train_log.csv", "val_log.csv"):
            path = self.out_dir / name
            if not self.is_main or not path.exists():
                continue
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            kept = [r for r in rows if int(r["iteration"]) <= self.iteration]
            if rows:
                with open(path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(kept)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``epochs`` (or ``max_time_s``); returns train_time_s, iterations,
        planned_iterations, batch_norm, epochs, final_loss, stopped_on_time, the precision used
        (``Precision.metrics``) and train_channels_last."""
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out_dir / "tensorboard")) if self.is_main else None
        start = time.perf_counter() - self.elapsed
        self.train_model.train()
        try:
            stopped_on_time, loss_value = self._epochs(writer, start)
        finally:
            self.compiled.restore()
            set_channels_last(self.model, self.own_layout)
            if writer is not None:
                writer.close()
        return {"train_time_s": self.elapsed, "iterations": self.iteration,
                "planned_iterations": self.planned_iterations(), "batch_norm": self.batch_norm,
                "epochs": self.epoch, "final_loss": float(loss_value),
                "stopped_on_time": stopped_on_time, **self.precision.metrics(),
                "train_channels_last": self.channels_last, **self.compiled.metrics()}

    def _epochs(self, writer, start: float) -> tuple[bool, float]:
        """The epochs still to run; returns (stopped_on_time, last loss)."""
        loss_value, stopped_on_time = self.last_loss, False
        while self.epoch < self.epochs and not stopped_on_time:
            bar = tqdm(self.loader(self.epoch), desc=f"epoch {self.epoch + 1}/{self.epochs}",
                       disable=not (self.show_progress and self.is_main), leave=False)
            for images, targets in bar:
                losses = self.step(images, targets)
                self.iteration += 1
                loss_value = self.last_loss = sum(losses.values())
                self.epoch_step += 1
                self.elapsed = time.perf_counter() - start
                if self.is_main and (self.iteration % self.log_every == 0 or self.iteration == 1):
                    self._log_row(losses, loss_value, writer)
                bar.set_postfix(loss=f"{loss_value:.3f}")
                self._progress(loss_value, start)
                if self.validate is not None and self.iteration in self.validate_at:
                    self._validate(writer)
                    self.train_model.train()
                if self.max_iterations and self.iteration >= self.max_iterations:
                    break
                if self.max_time_s and self.elapsed > self.max_time_s:
                    stopped_on_time = True
                    log.warning("training stopped by max_time_s=%.0f at epoch %d, iteration %d",
                                self.max_time_s, self.epoch + 1, self.iteration)
                    break
                if self._stop_agreed():
                    self.save()
                    raise TrainingInterrupted(self.iteration)
            if stopped_on_time:     # mid-epoch: the checkpoint keeps epoch_step
                self.save()
                break
            self.epoch, self.epoch_step = self.epoch + 1, 0
            if self.max_iterations and self.iteration >= self.max_iterations:
                self.epochs = self.epoch   # the budget ends inside this epoch
            if (self.validate is not None and self.val_every
                    and (self.epoch % self.val_every == 0 or self.epoch == self.epochs)):
                self._validate(writer)
                self.train_model.train()
            self.save()
        return stopped_on_time, loss_value

    def _progress(self, loss_value: float, start: float) -> None:
        """A progress line every ``PROGRESS_S`` seconds when no progress bar is drawn (output to a
        file, or progress off), so a log shows the job is alive and how far it got."""
        now = time.perf_counter()
        if not self.is_main or (self.show_progress and sys.stderr.isatty()):
            return
        if now - getattr(self, "_last_progress", start) >= PROGRESS_S:
            self._last_progress = now
            log.info("training: iteration %d of %d (epoch %d of %d), loss %.3f, %.0f s", self.iteration,
                     self.planned_iterations(), self.epoch + 1, self.epochs, loss_value, now - start)

    def _stop_agreed(self) -> bool:
        """``stop_requested()`` on any rank (one MAX all-reduce of a flag under DDP)."""
        if self.stop_requested is None:
            return False
        flag = bool(self.stop_requested())
        if self.distributed:
            device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            tensor = torch.tensor([int(flag)], device=device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag

    def step(self, images, targets) -> dict[str, float]:
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.autocast):
            losses = self.compiled.run(lambda: self.train_model(images, targets))
        total = sum(losses.values())
        if not torch.isfinite(total):
            parts = {k: float(v) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"loss is {float(total)} at iteration {self.iteration + 1} (epoch {self.epoch + 1}):"
                f" {parts}; training stopped, the last good checkpoint is {self.checkpoint_path}"
                f" ({'present' if self.checkpoint_path.exists() else 'none written yet'})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _log_row(self, losses: dict, loss_value: float, writer) -> None:
        row = {"iteration": self.iteration, "epoch": self.epoch + 1,
               "time_s": round(self.elapsed, 3), "lr": self.optimizer.param_groups[0]["lr"],
               "loss": loss_value, **losses}
        _append_csv(self.out_dir / "train_log.csv", row)
        for key, value in row.items():
            if key.startswith("loss") or key == "lr":
                writer.add_scalar(f"train/{key}", value, self.iteration)

    def _validate(self, writer) -> None:
        self.model.eval()
        scores = self.validate(self.model)    # every rank takes part; rank 0 gets the scores
        if not self.is_main:
            return
        row = {"iteration": self.iteration, "epoch": self.epoch, "time_s": round(self.elapsed, 3),
               "map": scores.get("map", math.nan), "map_50": scores.get("map_50", math.nan)}
        _append_csv(self.out_dir / "val_log.csv", row)
        writer.add_scalar("val/map", row["map"], self.iteration)
        writer.add_scalar("val/map_50", row["map_50"], self.iteration)
        log.info("validation at iteration %d (epoch %d of %d): AP %.1f%%, AP50 %.1f%%", self.iteration,
                 self.epoch + 1, self.epochs, 100 * row["map"], 100 * row["map_50"])


def batch_norm_mode(model: nn.Module, distributed: bool, device: torch.device,
                    sync: bool | str) -> str:
    """'none' (no BatchNorm), 'single process', 'synchronised' or 'per rank' (DDP without
    SyncBatchNorm); ``sync`` as ``Trainer``'s ``sync_batch_norm``."""
    if sync not in (True, False, "auto"):
        raise ValueError(f"train.sync_batch_norm: {sync!r}; choose true, false or auto")
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "none"
    if not distributed:
        return "single process"
    if sync is True and device.type != "cuda":
        raise ValueError("train.sync_batch_norm=true needs CUDA: torch's SyncBatchNorm has no CPU "
                         "kernel; use train.sync_batch_norm=auto (per-rank BatchNorm on CPU) or false")
    if sync is True or (sync == "auto" and device.type == "cuda"):
        return "synchronised"
    log.warning("BatchNorm under DDP on %s: each rank normalises its own share of the batch "
                "(train.sync_batch_norm=%s; SyncBatchNorm needs CUDA)", device.type, sync)
    return "per rank"


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def epochs_for(epochs: int, iterations: int, num_images: int, batch_size: int) -> int:
    """``epochs``, or with ``iterations`` > 0 the whole epochs of ``num_images`` at
    ``batch_size`` that reach that many iterations (so a schedule given in iterations means the
    same training on a dataset of any size; the last epoch may overshoot by up to one epoch).
    An epoch is ``num_images // batch_size`` iterations, as the loader drops the last partial
    batch when there is more than one batch."""
    if iterations <= 0:
        return epochs
    per_epoch = num_images // batch_size if num_images > batch_size else 1
    return max(1, math.ceil(iterations / per_epoch))


def warmup_then(scheduler_factory, optimizer, warmup_iterations: int, warmup_factor: float):
    """Linear warm-up from ``warmup_factor`` x lr over ``warmup_iterations``, then the given
    scheduler (YOLO's warm-up from 1e-3 to 1e-2 is warmup_factor 0.1). None factory: constant."""
    main = scheduler_factory(optimizer) if scheduler_factory is not None else None
    if warmup_iterations <= 0:
        return main
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_factor,
                                             total_iters=warmup_iterations)
    if main is None:
        return warm
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main],
                                                 milestones=[warmup_iterations])
