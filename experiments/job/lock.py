"""One run folder, one owner: ``<run dir>/.detbench.lock`` while a job works in it.

The lock file is JSON: ``{"pid": int, "host": str, "started": ISO 8601 UTC, "slurm_job_id": str
or null, "command": str}``, created with O_EXCL (two jobs started together cannot both win). A
lock left behind is *stale*, and replaced with a log line, when it names this host and a pid
that no longer runs, or this host's SLURM job (a requeue). Any other lock refuses the job,
naming the owner, the file and ``break_lock=true`` (for a run known to be gone, e.g. a lock
from another machine whose job was killed). The owner removes the file when the job ends.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger("detbench")

LOCK = ".detbench.lock"


class FolderLocked(RuntimeError):
    """Another live job owns the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by another user
        return True
    return True


def _read(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}   # half-written or garbled: treated as an owner we cannot judge


class RunLock:
    """The lock of the run folder ``out``; ``acquire`` then ``release`` (or use ``with``)."""

    def __init__(self, out: Path, break_lock: bool = False):
        self.path = Path(out) / LOCK
        self.break_lock = break_lock
        self.held = False

    def stale_reason(self, owner: dict) -> str | None:
        """Why a found lock may be replaced (None: it may not)."""
        if self.break_lock:
            return "break_lock=true"
        here = socket.gethostname()
        slurm = os.environ.get("SLURM_JOB_ID")
        if slurm and owner.get("slurm_job_id") == slurm:
            return f"the same SLURM job {slurm}, requeued"
        pid = owner.get("pid")
        if owner.get("host") == here and isinstance(pid, int) and not _pid_alive(pid):
            return f"its pid {pid} no longer runs on {here}"
        return None

    def acquire(self) -> None:
        """Take the lock, replacing a stale one; raise FolderLocked naming the owner."""
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "command": " ".join(sys.argv)[:500]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _read(self.path)
                reason = self.stale_reason(owner)
                if reason is None:
                    raise FolderLocked(
                        f"{self.path.parent} is in use by another run (pid {owner.get('pid', '?')} on "
                        f"{owner.get('host', '?')}, started {owner.get('started', '?')}; lock file "
                        f"{self.path}): wait for it, choose another hydra.run.dir, or, if that run is "
                        "gone, pass break_lock=true") from None
                log.warning("replacing the lock %s of pid %s on %s: %s", self.path, owner.get("pid"),
                            owner.get("host"), reason)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise FolderLocked(f"{self.path}: could not take the lock (another job keeps taking it)")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and _read(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
