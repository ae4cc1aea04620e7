"""The run folder's layout: the one home of its file and folder names (README, "What a run writes").

``analysis/`` reads the same names from disk; it never imports this module (it reads run
folders, not code), so ``analysis.runs`` states the two it needs beside a pointer here.
"""
from __future__ import annotations

from pathlib import Path

METRICS = "metrics.json"
SAVED_CONFIG = Path(".hydra") / "config.yaml"        # the composed config Hydra saved
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = Path(CHECKPOINTS) / "last.pt"
#: files whose presence means the folder holds a previous run
PREVIOUS_RUN_FILES = (METRICS, "train_log.csv", "val_log.csv", "error.txt")
#: every file a run may write (deleted by overwrite=true)
RUN_FILES = (*PREVIOUS_RUN_FILES, "metrics.json.tmp", "resume_error.txt", "detections.json",
             "ground_truth.json", "per_class.csv", "pr_curves.npz")
RUN_FOLDERS = (CHECKPOINTS, "samples", "tensorboard")


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / LAST_CHECKPOINT
