"""The speed benchmark once per detector in a sweep: later runs (other seeds) reuse its numbers.

A run's speed depends on the detector's architecture, the device and the bench settings, not on
the training seed. With ``bench_reuse`` set to a folder (relative: to the run folder; compare's
``../bench_reuse`` is ``<sweep>/bench_reuse``), the
first run of a detector writes its bench metrics to ``<folder>/<detector>-<key>.json``; a later run
with the same key loads them instead of timing again, and its metrics.json says so:
``bench_reused_from`` names the run folder that measured them (empty in that run itself).
The key hashes the detector's model config, the number of classes, the device and the bench
settings, so a changed setting never reuses an old number.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def reuse_key(detector: str, model: dict, num_classes: int, device: str, bench: dict) -> str:
    """``<detector>-<10 hex digits>`` of everything the timings depend on."""
    text = json.dumps({"model": model, "classes": num_classes, "device": device, "bench": bench},
                      sort_keys=True, default=str)
    return f"{detector}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def bench_once(folder: str | Path | None, key: str, run_dir: Path, measure: Callable[[], dict]) -> dict:
    """Without ``folder``: ``measure()``. With it: the result stored under ``key`` +
    ``bench_reused_from: <the run that measured it>``, else ``measure()``'s, stored, +
    ``bench_reused_from: ""``."""
    if not folder:
        return measure()
    path = Path(os.path.normpath(Path(run_dir) / folder / f"{key}.json"))   # an absolute folder stays itself
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            log.info("bench: reusing the timings of %s (same detector, device and bench settings)",
                     stored["run"])
            return {**stored["metrics"], "bench_reused_from": stored["run"]}
        except (ValueError, KeyError) as error:   # a torn or foreign file: measure again
            log.warning("bench: ignoring %s (%s); measuring", path, error)
    metrics = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"run": str(run_dir), "metrics": metrics}, default=str))
    partial.replace(path)   # atomic: a parallel job reads the whole file or none
    return {**metrics, "bench_reused_from": ""}
