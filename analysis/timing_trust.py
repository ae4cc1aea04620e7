"""Which runs' timings the report may trust: the busy-machine guard's marks, read from metrics.json.

A run written by ``experiments.speed.busy_guard`` holds ``speed_reliable`` (the speed stage, every
batch size's timed set folded in) and ``train_time_reliable`` (``train_time_s``); false means the
machine was busy while it was timed (``speed_note`` / ``train_time_note`` say why). Such a timing
is kept in the tables with a mark (``BUSY_MARK``), drawn hollow in every speed plot, and left out
of every speed claim; the report says, per run, how to re-time it (``retime_sentences``). Older
runs without the keys count as reliable (nothing said they were not).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.runs import ok_runs

SPEED, TRAIN = "speed_reliable", "train_time_reliable"
BUSY_MARK = "‡"   # beside a number timed on a busy machine
BUSY_NOTE = f"{BUSY_MARK}: timed on a busy machine (the busy-machine guard): not a speed, in no speed claim."
#: metrics.json speed keys of the bench stage (the ones a busy ``speed_reliable`` discredits)
SPEED_PREFIXES = ("fps_", "latency_ms_", "proposal_ms_", "proposal_share_", "preprocess_ms_", "network_ms_",
                  "postprocess_ms_", "network_gflops_per_s_", "network_utilisation_")


def is_false(value) -> bool:
    """metrics.json's ``false`` as pandas holds it (bool, numpy bool or the string)."""
    if isinstance(value, (bool, np.bool_)):
        return not bool(value)
    return isinstance(value, str) and value.strip().lower() == "false"


def busy(runs: pd.DataFrame, key: str = SPEED) -> pd.Series:
    """bool per row of ``runs``: its ``key`` timing is marked unreliable."""
    if key not in runs:
        return pd.Series(False, index=runs.index)
    return runs[key].map(is_false).astype(bool)


def trusted(runs: pd.DataFrame, key: str = SPEED) -> pd.DataFrame:
    """``runs`` without the rows whose ``key`` timing is marked unreliable."""
    return runs[~busy(runs, key)]


def busy_runs(runs: pd.DataFrame, key: str = SPEED) -> dict[tuple, list[str]]:
    """(dataset, group) -> run folder names whose ``key`` timing is unreliable (finished runs)."""
    ok = ok_runs(runs)
    out: dict[tuple, list[str]] = {}
    for _, row in ok[busy(ok, key)].iterrows():
        out.setdefault((row["dataset"], row["group"]), []).append(str(row["run"]))
    return out


def without_busy_speed(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the speed keys of busy runs blanked where their group has a quiet run too (so a
    mean is over quiet timings only); a group timed only on a busy machine keeps its numbers
    (shown marked, drawn hollow). Adds ``speed_busy``: the row's speed is marked."""
    out = runs.copy()
    marked = busy(out)
    out["speed_busy"] = marked
    if not marked.any():
        return out
    speed_keys = [k for k in out.columns if k.startswith(SPEED_PREFIXES)]
    for _, rows in out.groupby(["group", "dataset"], sort=False):
        if (~marked[rows.index]).any():
            blank = rows.index[marked[rows.index]]
            out.loc[blank, speed_keys] = np.nan
    return out


def retime_command(row) -> str:
    """The command that re-times one run's speed into its own folder."""
    return f"detbench detector={row.get('detector', '?')} stages=[bench] weights={row.get('path', row.get('run'))}"


def retime_sentences(runs: pd.DataFrame) -> list[str]:
    """One sentence per finished run whose speed or training time was timed on a busy machine."""
    ok, sentences = ok_runs(runs), []
    for _, row in ok[busy(ok)].iterrows():
        sentences.append(
            f"{BUSY_MARK} The speed of run {row['run']} ({row.get('label', row['detector'])}, seed "
            f"{row.get('seed', '?')}) was timed on a busy machine ({row.get('speed_note', 'speed_reliable: false')}); "
            f"it is drawn hollow and left out of every speed claim. Re-time it on a quiet machine: "
            f"`{retime_command(row)}`.")
    for _, row in ok[busy(ok, TRAIN)].iterrows():
        sentences.append(
            f"{BUSY_MARK} The training time of run {row['run']} ({row.get('label', row['detector'])}, seed "
            f"{row.get('seed', '?')}) was taken on a busy machine "
            f"({row.get('train_time_note', 'train_time_reliable: false')}); "
            "its training seconds are marked and left out of every claim on training time. Training time is "
            "only measured by training: train it again on a quiet machine to time it.")
    return sentences
