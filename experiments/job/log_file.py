"""The run's log file (Hydra's ``<run dir>/<job name>.log``), as a handler that never stops a job
before it starts: a folder that refuses the file (read-only, a full disk) is said once on stderr
and the job logs to the terminal alone; pre-flight (``experiments.job.preflight``) then refuses
the folder with a message naming it. ``conf/hydra/job_logging/detbench.yaml`` names this class."""
from __future__ import annotations

import logging
import sys


class RunLogHandler(logging.FileHandler):
    """``logging.FileHandler`` that, when the file cannot be opened, drops its records instead of
    raising (``unusable`` holds why)."""

    def __init__(self, filename, mode: str = "a", encoding: str | None = None, delay: bool = False,
                 errors: str | None = None):
        self.unusable: str | None = None
        try:
            super().__init__(filename, mode, encoding, delay, errors)
        except OSError as error:
            super().__init__(filename, mode, encoding, True, errors)   # never opened
            self.unusable = f"{type(error).__name__}: {error}"
            sys.stderr.write(f"detbench: cannot write the log file {filename} ({self.unusable}); "
                             "logging to the terminal only\n")

    def emit(self, record: logging.LogRecord) -> None:
        if self.unusable is None:
            super().emit(record)
