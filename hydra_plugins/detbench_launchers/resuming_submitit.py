"""The submitit launchers with requeue-as-resume (a Hydra plugin, so it lives in
``hydra_plugins``). When SLURM preempts a job or its time runs out, submitit calls the
launcher's ``checkpoint`` (after ``experiments.job.interrupts`` has saved a checkpoint and written
``status: interrupted``) and requeues what it returns. Hydra's launcher returns the job with the
same overrides, which a rerun into its folder refuses (see ``experiments.job.folder``); these
add ``resume=true`` (and drop ``overwrite``), so the requeued job continues from
``checkpoints/last.pt``. ``conf/hydra/launcher/slurm.yaml`` uses them. The job folder must not
depend on ``resume`` (the default ``hydra.sweep.subdir`` does not).
"""
from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher


def resume_overrides(sweep_overrides: list[str]) -> list[str]:
    """A job's overrides for its requeue: ``resume=true`` and no ``overwrite``."""
    kept = [o for o in sweep_overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "overwrite")]
    return [*kept, "resume=true"]


class _ResumeOnRequeue:
    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        return super().checkpoint(resume_overrides(list(sweep_overrides)), *args, **kwargs)


class ResumingSlurmLauncher(_ResumeOnRequeue, SlurmLauncher):
    """``SlurmLauncher`` whose requeued jobs resume."""


class ResumingLocalLauncher(_ResumeOnRequeue, LocalLauncher):
    """``LocalLauncher`` whose requeued jobs resume."""
