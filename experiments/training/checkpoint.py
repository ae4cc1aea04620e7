"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the model, optimizer, scheduler and AMP-scaler states, the RNG states
(torch CPU, CUDA, Python) and the position (epoch, iteration). It is written to a temporary
file in the same folder and renamed, so a crash mid-write never leaves a half file behind, and
loaded with ``torch.load(weights_only=True)``: a checkpoint can never run code.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from experiments.build import load_torch_file


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename). A failed write (a
    full disk: OSError ENOSPC, or torch's RuntimeError around it) removes the temporary file and
    raises OSError naming the checkpoint; the previous ``path`` is kept whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        tmp.unlink(missing_ok=True)
        kept = f"; the previous {path.name} is kept" if path.is_file() else ""
        raise OSError(f"could not write the checkpoint {path} ({type(error).__name__}: {error}){kept}: "
                      "free disk space (df -h) and resume") from error


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``; any failure names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = load_torch_file(path, "checkpoint")
    except ValueError as error:
        raise RuntimeError(f"checkpoint {path} is corrupt or not a detbench checkpoint: {error}") from error
    missing = {"model", "optimizer", "epoch", "iteration"} - set(state)
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {sorted(missing)}")
    return state
