"""The busy-machine guard: is this a moment a timing can be trusted?

Two readings, each stated against a committed number, never against the run itself (a run that
starts on a busy machine must not calibrate itself busy):

* the **reference kernel**: a fixed single-threaded float32 matmul (256 x 256 by 256 x 256,
  ``KERNEL_REPEATS`` times), the median of ``KERNEL_SAMPLES`` timings in ms, divided by the
  committed quiet median for this CPU model (``busy_reference.json``, key: /proc/cpuinfo's
  "model name"). Other work on the cores slows it: ratio > ``tolerance`` is *disturbed*;
* the **load average** (1 min) against the usable core count: load1 - 1 (this process) above
  ``load_per_core`` x cores is *disturbed*.

``busy_reference.json``: ``{cpu model: {"kernel_ms": quiet median ms, "tolerance": ratio,
"load_per_core": float, "calibration": {what was measured, when, loads}}}``; written by
``python -m experiments.speed.busy_guard --calibrate`` (on a quiet machine, with and without a
CPU hog: ``--hog``). A CPU without an entry is judged by the load alone, and says so.

``guarded(measure, what)`` runs ``measure()`` between two readings; disturbed -> measured once
more; still disturbed -> the result is kept but marked: ``speed_reliable: false`` and a
``speed_note`` naming the readings and how to re-time (``stages=[bench]`` on a quiet machine).
The speed stage guards itself as a whole and each batch size's timed set (``benchmark(guard=...)``:
``speed_reliable_b{b}``); ``fold_batch_marks`` makes one unreliable set mark the run.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("detbench")

REFERENCE_FILE = Path(__file__).with_name("busy_reference.json")
KERNEL_SIZE, KERNEL_REPEATS, KERNEL_SAMPLES = 256, 8, 15
DEFAULT_LOAD_PER_CORE = 0.5   # used when a CPU has no committed entry


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kernel_ms(samples: int = KERNEL_SAMPLES) -> float:
    """Median ms of the reference kernel, on one thread (the caller's thread count restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.rand(KERNEL_SIZE, KERNEL_SIZE, generator=g)
        b = torch.rand(KERNEL_SIZE, KERNEL_SIZE, generator=g)
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            for _ in range(KERNEL_REPEATS):
                a @ b
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    times.sort()
    return times[len(times) // 2]


def load_reference(path: Path = REFERENCE_FILE) -> dict | None:
    """This CPU model's committed entry, or None."""
    try:
        return json.loads(path.read_text()).get(cpu_model())
    except (OSError, ValueError):
        return None


@dataclass
class Reading:
    """One look at the machine: kernel_ms (median ms), ratio (kernel_ms / committed quiet ms;
    None without an entry), load1 and cores, disturbed and why (empty when quiet)."""
    kernel_ms: float
    ratio: float | None
    load1: float
    cores: int
    disturbed: bool
    why: str

    def text(self) -> str:
        ratio = f"{self.ratio:.2f}x the quiet reference" if self.ratio is not None else "no reference"
        return f"kernel {self.kernel_ms:.2f} ms ({ratio}), load {self.load1:.1f} on {self.cores} cores"


def read_machine(reference: dict | None = None, own: float = 1.0) -> Reading:
    """One reading now. ``own``: processes of this job that were just busy on the cores (this
    process, plus any workers it ran), subtracted from the load average before it is judged."""
    reference = reference if reference is not None else load_reference()
    ms, load1, cores = kernel_ms(), os.getloadavg()[0], usable_cores()
    why = []
    ratio = ms / reference["kernel_ms"] if reference else None
    if ratio is not None and ratio > reference["tolerance"]:
        why.append(f"the reference kernel ran {ratio:.2f}x slower than on the quiet machine "
                   f"(tolerance {reference['tolerance']}x)")
    per_core = reference["load_per_core"] if reference else DEFAULT_LOAD_PER_CORE
    if load1 - own > per_core * cores:
        why.append(f"load average {load1:.1f} > {own:g} + {per_core} x {cores} cores")
    return Reading(ms, ratio, load1, cores, bool(why), "; ".join(why))


def guarded(measure: Callable[[], dict], what: str, attempts: int = 2,
            read: Callable[[], Reading] = read_machine) -> dict:
    """``measure()`` between two readings, repeated while disturbed (``attempts`` in all); returns
    its dict plus ``speed_reliable`` (bool), ``speed_guard`` (the readings, text) and, when
    unreliable, ``speed_note``."""
    reference_known = load_reference() is not None
    for attempt in range(1, attempts + 1):
        before = read()
        result = measure()
        after = read()
        if not (before.disturbed or after.disturbed):
            break
        log.warning("%s: the machine was busy (%s); %s", what, before.why or after.why,
                    "measuring again" if attempt < attempts else "kept, marked unreliable")
    readings = f"before: {before.text()}; after: {after.text()}"
    out = {**result, "speed_reliable": not (before.disturbed or after.disturbed), "speed_guard": readings}
    if not out["speed_reliable"]:
        out["speed_note"] = (f"{what} timed on a busy machine ({before.why or after.why}; {readings}); "
                             "kept out of every speed claim. Re-time on a quiet machine with "
                             "stages=[bench] weights=<this run folder>")
    elif not reference_known:
        out["speed_guard"] += f"; no committed kernel reference for {cpu_model()!r}: judged by load alone"
    return out


def marks(before: Reading, after: Reading, key: str, what: str) -> dict:
    """A timing taken once between ``before`` and ``after`` (no repeat: too long to take twice):
    ``{key}_reliable`` and, when either reading was disturbed, ``{key}_note`` saying why."""
    reliable = not (before.disturbed or after.disturbed)
    out = {f"{key}_reliable": reliable}
    if not reliable:
        out[f"{key}_note"] = (f"{what} measured on a busy machine ({before.why or after.why}; before: "
                              f"{before.text()}; after: {after.text()})")
    return out


def batch_marks(checked: dict, b: int) -> dict:
    """``guarded``'s marks of one batch size's timed set, as metrics.json keys ending in ``_b{b}``:
    ``speed_reliable_b{b}``, ``speed_guard_b{b}`` and, when unreliable, ``speed_note_b{b}``."""
    return {f"{key}_b{b}": checked[key] for key in ("speed_reliable", "speed_guard", "speed_note") if key in checked}


def fold_batch_marks(metrics: dict) -> dict:
    """A run's speed is unreliable when its whole stage or any batch size's timed set was (a
    runtime's rows too: ``onnxruntime_speed_reliable_b1``): ``metrics`` with ``speed_reliable``
    false and a ``speed_note`` naming those sets when any ``*speed_reliable_b*`` is false."""
    busy = sorted(k for k, v in metrics.items() if "speed_reliable_b" in k and v is False)
    if not busy:
        return metrics
    notes = [metrics.get(k.replace("speed_reliable", "speed_note"), "") for k in busy]
    sets = ", ".join(k.replace("speed_reliable_b", "batch size ").replace("_", " ").strip() for k in busy)
    note = f"{sets} timed on a busy machine: {notes[0]}"
    if metrics.get("speed_note"):
        note = metrics["speed_note"] + " | " + note
    return {**metrics, "speed_reliable": False, "speed_note": note}


def calibrate(hog: bool) -> dict:
    """Kernel medians on this machine now (and with a CPU hog per core when ``hog``)."""
    import subprocess
    import sys

    quiet = [kernel_ms() for _ in range(5)]
    row = {"cpu": cpu_model(), "cores": usable_cores(), "load1": os.getloadavg()[0],
           "kernel_ms_runs": [round(x, 3) for x in quiet]}
    if hog:
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(usable_cores())]
        try:
            time.sleep(2)
            row["hog_kernel_ms_runs"] = [round(kernel_ms(), 3) for _ in range(5)]
            row["hog_load1"] = os.getloadavg()[0]
        finally:
            for p in hogs:
                p.kill()
                p.wait()
    return row


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="busy-guard calibration: prints kernel timings as JSON")
    parser.add_argument("--hog", action="store_true", help="also time it with a CPU hog on every core")
    print(json.dumps(calibrate(parser.parse_args().hog), indent=2))
