"""Claim (b)'s timing: the sweep's detectors timed interleaved in one process on real validation
images, after every job of the sweep finished (a sweep-level stage: ``sweep_stages=[interleaved_latency]``).

Separate bench stages run minutes apart, so drift between them (another job on the cores, the
clock) lands in the difference; and they time uniform-noise images, whose post-processing load
is unlike real outputs'. Here each round times every detector once on the same real image at
batch 1, the order reversed every other round (A, B, B, A, A, B, ...), so drift hits all alike.

Writes ``<sweep>/sweep_stages/interleaved_latency.json``: {"runs": {run folder: {"detector",
"samples_ms" [batches] end to end (proposals, preprocess, network, postprocess)}}, "batches",
"images" (the validation images cycled), "device", "threads", and the busy guard's ``speed_reliable``,
``speed_guard`` (``speed_note`` when disturbed: timed again once, then kept, marked)}; ``analysis.significance``
reads it and leaves a busy one out of every speed claim.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from experiments.data.split_builder import build_split
from experiments.inference.run_loader import load_detector
from experiments.job.layout import last_checkpoint
from experiments.job.process import resolve_device
from experiments.speed.benchmark import StageTimer
from experiments.speed.busy_guard import guarded

log = logging.getLogger("detbench")
BATCHES, WARMUP, IMAGES = 30, 2, 30


def finished_runs(sweep_dir: Path) -> list[Path]:
    """Run folders under ``sweep_dir`` whose metrics.json says ok and that kept a checkpoint; the
    first seed of each detector (one run per detector)."""
    chosen: dict[str, tuple] = {}
    for path in sorted(Path(sweep_dir).rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if metrics.get("status") == "ok" and last_checkpoint(path.parent).is_file():
            key = (metrics.get("seed", 0), str(path.parent))
            name = str(metrics.get("detector"))
            if name not in chosen or key < chosen[name]:
                chosen[name] = key
    return [Path(folder) for _, folder in chosen.values()]


def time_interleaved(timers: dict[str, StageTimer], images: list[torch.Tensor], batches: int = BATCHES,
                     warmup: int = WARMUP) -> dict[str, list[float]]:
    """name -> ms [batches]: round r times every detector once on image r (cycled), batch 1, the
    order reversed on odd rounds; ``warmup`` untimed rounds first."""
    names = list(timers)
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + batches):
            image = [images[r % len(images)]]
            for name in names if r % 2 == 0 else names[::-1]:
                times, _ = timers[name](image)
                if r >= warmup:
                    samples[name].append(1000.0 * sum(times))
    return samples


def stage(cfg: DictConfig, sweep_dir: Path) -> dict:
    """The sweep-level stage: every finished detector of the sweep, timed interleaved."""
    runs = finished_runs(sweep_dir)
    if len(runs) < 2:
        return {"problem": f"{len(runs)} finished run(s) with a checkpoint: nothing to interleave"}
    device = resolve_device(cfg.device)
    val = build_split(cfg.dataset, "val")
    images = [val[i][0].to(device) for i in range(min(IMAGES, len(val)))]
    loaded = {str(run): load_detector(run, device) for run in runs}
    timers = {run: StageTimer(d.model, device, "fp32", False, False) for run, d in loaded.items()}
    guard = guarded(lambda: {"samples": time_interleaved(timers, images)}, "the interleaved timing")
    samples = guard.pop("samples")
    log.info("interleaved latency: %s", {loaded[r].name: round(sorted(s)[len(s) // 2], 1) for r, s in samples.items()})
    return {"runs": {run: {"detector": loaded[run].name, "samples_ms": s} for run, s in samples.items()},
            "batches": BATCHES, "images": f"{len(images)} validation images, cycled", "device": str(device),
            "threads": torch.get_num_threads(), **guard}
