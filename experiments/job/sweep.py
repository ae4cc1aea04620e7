"""A sweep as one thing a user steers: how many of its jobs failed (the exit code says so), and
``detbench resume=SWEEP_DIR``, which resumes every unfinished job of a multirun in place.

A sweep folder is what Hydra's multirun writes: ``multirun.yaml`` (the sweep's composed config,
with ``hydra.overrides.task`` / ``hydra.overrides.hydra`` as typed) and one job folder per job
(``hydra.sweep.subdir``), each with ``metrics.json`` once the job ran.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

SWEEP_CONFIG = "multirun.yaml"
GOOD = ("ok", "incomplete", "finished")   # a job that ended as planned (or was already done)
NOT_JOBS = ("report", "sweep_stages", "bench_reuse")   # bench_reuse: compare's shared speed timings


@dataclass
class SweepOutcome:
    """jobs: job folders found; failed: (folder name, status, first line of the error) per job
    that did not end ok (a folder without metrics.json counts as ``no metrics.json``)."""
    jobs: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def message(self, sweep_dir: Path) -> str:
        shown = "; ".join(f"{name}: {status} ({error})" for name, status, error in self.failed[:5])
        more = f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
        return (f"{len(self.failed)} of {self.jobs} job(s) of the sweep {sweep_dir} failed: {shown}{more}. "
                f"The report covers the others; `detbench resume={sweep_dir}` resumes every unfinished job")


def sweep_outcome(sweep_dir: Path) -> SweepOutcome:
    """Read every job folder of ``sweep_dir``: its direct subfolders but report/, sweep_stages/, bench_reuse/,
    rescore_*/ (detbench-rescore) and hidden ones (the submitit launcher's .submitit/)."""
    outcome = SweepOutcome()
    for folder in sorted(p for p in Path(sweep_dir).iterdir()
                         if p.is_dir() and p.name not in NOT_JOBS and not p.name.startswith((".", "rescore_"))):
        outcome.jobs += 1
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            outcome.failed.append((folder.name, "no metrics.json", "the job never finished writing"))
            continue
        status = metrics.get("status") if isinstance(metrics, dict) else None
        if status not in GOOD:
            outcome.failed.append((folder.name, str(status), str(metrics.get("error", "")).split("\n")[0][:200]))
    return outcome


def is_sweep_dir(path: str) -> bool:
    return (Path(path).expanduser() / SWEEP_CONFIG).is_file()


def sweep_resume_argv(argv: list[str]) -> list[str]:
    """``argv`` with ``resume=SWEEP_DIR`` (a folder holding multirun.yaml) turned into the sweep's
    own overrides + ``hydra.sweep.dir=SWEEP_DIR resume=true --multirun``: every job lands in its
    old folder (``hydra.sweep.subdir`` depends on the job number and overrides only), a finished
    one says so and changes nothing, an unfinished one continues from its checkpoint, one that
    never started starts. Other arguments are kept after the sweep's (they win). Unchanged when
    no argument is ``resume=`` a sweep folder."""
    found = [a for a in argv if a.startswith("resume=") and is_sweep_dir(a.split("=", 1)[1])]
    if not found:
        return argv
    sweep_dir = Path(found[0].split("=", 1)[1]).expanduser().resolve()
    saved = OmegaConf.load(sweep_dir / SWEEP_CONFIG)
    dropped = ("resume", "overwrite", "hydra.sweep.dir", "hydra.mode", "hydra.run.dir")

    def kept(overrides) -> list[str]:
        return [o for o in (overrides or []) if o.split("=", 1)[0].lstrip("+~") not in dropped]

    rest = [a for a in argv if a not in found and a not in ("-m", "--multirun")]
    return [*kept(saved.hydra.overrides.hydra), *kept(saved.hydra.overrides.task), *rest,
            f"hydra.sweep.dir={sweep_dir}", "resume=true", "--multirun"]
