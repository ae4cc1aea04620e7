"""What a run may do to the folder it is pointed at, so that no result is ever lost.

A folder holds a *previous run* when it has ``metrics.json``, ``train_log.csv``, ``val_log.csv``,
``error.txt`` or a checkpoint (Hydra's own ``.hydra/`` and log file, written before the job
starts, do not count).

=================================  ===========================================================
situation                          what happens
=================================  ===========================================================
fresh folder                       the run starts
previous run, no ``resume``        refused with a message; nothing is written (so logs are
                                   never appended across runs); ``overwrite=true`` first
                                   deletes the run's files (and empties the Hydra log)
another live job owns the folder  refused naming its lock (``experiments.job.lock``);
                                   ``break_lock=true`` takes it over
``resume=true``, a setting that    refused naming each key (``experiments.job.resume_check``);
alters results changed             ``resume_changes=allow`` applies and records them
``resume=true``, run unfinished    continues from ``checkpoints/last.pt``; a stale
                                   ``error.txt`` is removed first
``resume=true``, run finished      "already finished", nothing changes, exit 0; *finished* means
                                   ``metrics.json`` says ok, training reached ``train.budget``
                                   (or its time cap) and each stage asked for left its numbers
``resume=true`` on a finished run  (e.g. more epochs) the finished results stay untouched until
that asks for more work            the new run succeeds; a failure or interrupt goes to
                                   ``resume_error.txt`` beside them and the exit is non-zero
=================================  ===========================================================

A refused or "finished" command changes no file in the folder: the saved config
(``.hydra/config.yaml``) is written by the job only once it may go on (Hydra's own copy is off:
``hydra.output_subdir: null``), and the lines it logged are taken back out of the Hydra log
(:meth:`RunFolder.leave_untouched`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from experiments.job.layout import CHECKPOINTS, PREVIOUS_RUN_FILES, RUN_FILES, RUN_FOLDERS
from experiments.job.lock import FolderLocked, RunLock
from experiments.job.resume_check import check_resume
from experiments.training.budget import budget_of

log = logging.getLogger("detbench")

# metrics.json's layout: 2 (issue 27) adds interval_method, eval_images, eval_split, family facts;
# folders without the key are version 1 (analysis.runs reads both and marks what is missing)
SCHEMA_VERSION = 2
STAGE_KEYS = {"eval": "map", "bench": "fps_b1"}   # a key each stage writes into metrics.json
MESSAGE_CHARS = 240    # of the root cause's message in metrics.json's one-line error


class RunFolder:
    """The run folder ``out`` and the decision for it (see the module doc).

    ``hydra_log``: the job's log file, emptied by ``overwrite`` (None outside Hydra)."""

    def __init__(self, out: Path, resume: bool, overwrite: bool, hydra_log: Path | None = None):
        self.out, self.resume, self.overwrite = Path(out), resume, overwrite
        self.hydra_log = hydra_log
        self.protected = False          # True: a finished run's results must survive this job
        self.resume_changes: list[str] = []   # result-changing settings a resume was allowed
        log_file = hydra_log if hydra_log is not None and hydra_log.is_file() else None
        self._log_state = (log_file.stat().st_size, log_file.stat().st_mtime_ns) if log_file else None

    def previous_run(self) -> list[str]:
        """The files that show a previous run in this folder (empty: none)."""
        found = [name for name in PREVIOUS_RUN_FILES if (self.out / name).exists()]
        checkpoints = self.out / CHECKPOINTS
        if checkpoints.is_dir() and any(p.suffix == ".pt" for p in checkpoints.iterdir()):
            found.append("checkpoints/")
        return found

    def previous_metrics(self) -> dict:
        try:
            metrics = json.loads((self.out / "metrics.json").read_text())
            return metrics if isinstance(metrics, dict) else {}
        except (OSError, ValueError):
            return {}

    def is_finished(self, cfg: DictConfig, previous: dict) -> bool:
        if previous.get("status") != "ok":
            return False
        if "train" in cfg.stages and not (previous.get("train_stopped_on_time")
                                          or (previous.get("train_iterations") or 0)
                                          >= (previous.get("train_iterations_planned") or 1)
                                          and previous.get("train_budget") in (None, budget_of(cfg.train).label())):
            return False
        return all(key in previous for stage, key in STAGE_KEYS.items() if stage in cfg.stages)

    def prepare(self, cfg: DictConfig) -> str | None:
        """Decide; returns None when the job may go on, else why it stops before starting
        ("refused: ..." or "finished: ...")."""
        found = self.previous_run()
        if self.resume and self.overwrite:
            return f"refused: {self.out}: resume=true and overwrite=true contradict; choose one"
        if not self.resume:
            if found and not self.overwrite:
                return (f"refused: {self.out} holds a previous run ({', '.join(found)}): pass "
                        "resume=true to continue it, overwrite=true to delete it first, or choose "
                        "another hydra.run.dir")
            if found:
                self.clear()
            return None
        refusal, self.resume_changes = check_resume(self.out, cfg)
        if refusal:
            return refusal
        previous = self.previous_metrics()
        if self.is_finished(cfg, previous):
            return (f"finished: {self.out} holds a finished run (status ok, {previous.get('train_iterations')}"
                    f" iterations); nothing to resume and nothing was changed")
        self.protected = previous.get("status") == "ok"
        if not self.protected:
            for name in ("error.txt", "resume_error.txt"):
                (self.out / name).unlink(missing_ok=True)
        return None

    def clear(self) -> None:
        """overwrite=true: delete the previous run's files (only those a run writes)."""
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.out / name, ignore_errors=True)
        if self.hydra_log is not None and self.hydra_log.is_file():
            os.truncate(self.hydra_log, 0)   # the open handler appends from offset 0 again
        log.info("overwrite=true: deleted the previous run's files in %s", self.out)

    def leave_untouched(self) -> None:
        """After a refusal: stop logging into the Hydra log and cut it back to its size and
        modification time from before this job, so the folder is as it was."""
        if self._log_state is None or self.hydra_log is None:
            return
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == self.hydra_log.resolve():
                root.removeHandler(handler)
                handler.close()
        size, mtime = self._log_state
        if self.hydra_log.is_file() and self.hydra_log.stat().st_size > size:
            os.truncate(self.hydra_log, size)
            os.utime(self.hydra_log, ns=(mtime, mtime))

    def write_failure(self, text: str) -> Path:
        """A failure's full text: error.txt, or resume_error.txt when protecting a finished run."""
        path = self.out / ("resume_error.txt" if self.protected else "error.txt")
        path.write_text(text)
        return path


def decide(folder: RunFolder, cfg: DictConfig, is_main: bool, lock: RunLock | None = None) -> str | None:
    """Take ``lock`` and ``folder.prepare`` on rank 0 alone (it may delete files), its verdict
    shared by all ranks; a refused or finished job releases the lock and leaves the folder
    untouched."""
    import torch.distributed as dist

    verdict = None
    if is_main:
        try:
            if lock is not None:
                lock.acquire()
            verdict = folder.prepare(cfg)
        except FolderLocked as error:
            verdict = f"refused: {error}"
        except OSError as error:   # the lock file cannot be created: a read-only folder
            verdict = (f"refused: {folder.out} is not writable ({type(error).__name__}: {error}); "
                       "choose another hydra.run.dir or fix its permissions")
        if verdict and lock is not None:
            lock.release()
    if dist.is_available() and dist.is_initialized():
        shared = [verdict, folder.protected]
        dist.broadcast_object_list(shared, src=0)
        verdict, folder.protected = shared
    return verdict


def describe_error(error: BaseException) -> str:
    """One line: the root cause (the innermost ``__cause__``'s type and message), then the
    wrappers it was raised through (the root message is cut at MESSAGE_CHARS; error.txt has the
    whole traceback), e.g. ``TypeError: ... [raised as InstantiationException:
    Error in call to target 'detectors.yolo.YOLO']``."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    inner = chain[-1]
    message = " ".join(str(inner).split())
    message = message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS - 3] + "..."
    text = f"{type(inner).__name__}: {message}".rstrip(": ")
    wrappers = []
    for outer in chain[:-1]:
        lines = str(outer).strip().splitlines()
        first = lines[0] if lines else ""
        cut = first.find(type(inner).__name__)
        first = (first[:cut] if cut > 0 else first).rstrip(" :(")
        wrappers.append(f"{type(outer).__name__}: {first}" if first else type(outer).__name__)
    return text + (f" [raised as {' <- '.join(wrappers)}]" if wrappers else "")


def write_metrics(out: Path, metrics: dict, is_main: bool) -> None:
    """metrics.json, replaced in one step (a reader never sees half a file); rank 0 only."""
    if is_main:
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, default=_json_default))
        os.replace(tmp, out / "metrics.json")


def _json_default(value):
    if torch.is_tensor(value):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
