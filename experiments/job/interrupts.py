"""Stopping a run on a signal without losing it: SIGINT (Ctrl-C), SIGTERM (what SLURM and
``kill`` send before a kill) and, under submitit, its preemption signal (``SUBMITIT_PREEMPT_SIGNAL``,
USR2 by default).

While :class:`InterruptGuard` is active, the first signal only sets a flag: the training loop
polls it after every iteration (``Trainer(stop_requested=guard.requested)``), saves
``checkpoints/last.pt`` and raises :class:`RunInterrupted`; the runner then writes
``metrics.json`` with ``status: interrupted``, the iteration and the command that resumes, and
the process exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM) without a traceback.
Outside the training loop (data loading, evaluation, benchmark), or on a second signal, the
signal raises :class:`RunInterrupted` at once, and the last checkpoint written is the one to
resume from.

Under submitit (``SUBMITIT_EXECUTOR`` set) the preemption signal takes the same path; after the
run's files are written, :meth:`InterruptGuard.hand_over` calls submitit's own handler, which
asks the launcher for its ``checkpoint`` (``experiments.launcher`` adds ``resume=true``) and
requeues the job.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from experiments.job.layout import last_checkpoint

log = logging.getLogger("detbench")


class RunInterrupted(KeyboardInterrupt):
    """A signal stopped the run. ``signum``: the signal; ``iteration``: the training iteration
    the checkpoint holds, when training saved one on the way out (else None)."""

    def __init__(self, signum: int, iteration: int | None = None) -> None:
        super().__init__(f"{signal.Signals(signum).name} received")
        self.signum, self.iteration = signum, iteration


def preemption_signal() -> int | None:
    """submitit's preemption signal when this process is a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return int(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))


class InterruptGuard:
    """Context manager: catches SIGINT, SIGTERM (and submitit's preemption signal) while active
    and restores the previous handlers on exit. SIGINT is left alone when it was ignored
    (a background job of a non-interactive shell), as Python itself does."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False           # True inside the training loop, which polls requested()
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None and self.deferring:
            self.signum = signum
            log.warning("%s received: saving a checkpoint at the end of this iteration and stopping "
                        "(send it again to stop at once)", signal.Signals(signum).name)
            return
        self.signum = self.signum or signum
        raise RunInterrupted(signum)

    def __enter__(self) -> InterruptGuard:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self                  # signal handlers can only be set in the main thread
        signals = [signal.SIGTERM, preemption_signal()]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signals.append(signal.SIGINT)
        for signum in filter(None, signals):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def hand_over(self) -> None:
        """After a preemption under submitit: run submitit's handler (checkpoint, requeue, exit)."""
        previous = self._previous.get(preemption_signal() or -1)
        if self.signum is not None and self.signum == preemption_signal() and callable(previous):
            log.info("handing the preempted job to submitit for requeueing")
            previous(self.signum, None)


def resume_command(out: Path, overrides: list[str], start_over: bool = False) -> str:
    """The shell command that continues this run in ``out`` from its last checkpoint: the job's
    own overrides (without resume/overwrite/hydra.run.dir), run from the same working folder.
    ``start_over`` (no checkpoint was written yet): the command that starts it again instead."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in
            ("resume", "overwrite", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")]
    program = "detbench" if Path(sys.argv[0]).name == "detbench" else f"{sys.executable} -m experiments.run"
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and "SLURM_JOB_ID" not in os.environ:
        program = f"torchrun --nproc_per_node={world} -m experiments.run"
    sweep = sweep_dir()
    if sweep is not None:   # a multirun's job: resume the whole sweep in place
        return f"cd {shlex.quote(os.getcwd())} && {program} {shlex.join([f'resume={sweep}'])}"
    args = shlex.join([*kept, f"hydra.run.dir={Path(out).resolve()}",
                       "overwrite=true" if start_over else "resume=true"])
    return f"cd {shlex.quote(os.getcwd())} && {program} {args}"


def sweep_dir() -> Path | None:
    """The sweep folder when this job is one of a Hydra multirun (None otherwise)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).resolve()


def interrupted_record(stop: KeyboardInterrupt, out: Path, overrides: list[str]) -> dict:
    """metrics.json's keys for an interrupted run (``resume_command`` starts over with
    ``overwrite=true`` when no checkpoint exists yet)."""
    signum = getattr(stop, "signum", signal.SIGINT)
    iteration = getattr(stop, "iteration", None)
    start_over = not last_checkpoint(out).is_file()
    command = resume_command(out, overrides, start_over)
    where = (f"at iteration {iteration} (checkpoint saved)" if iteration is not None
             else "before this iteration's checkpoint (a resume starts from the last one written)")
    if start_over:
        where = "before any checkpoint was written; nothing to resume, start again"
    return {"status": "interrupted", "interrupt_signal": signal.Signals(signum).name,
            "interrupted_iteration": iteration, "resume_command": command,
            "exit_code": 128 + int(signum),
            "error": f"interrupted by {signal.Signals(signum).name} {where}; resume with: {command}"}
