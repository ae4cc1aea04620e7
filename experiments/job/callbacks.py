"""Hydra callbacks: when a sweep ends, run the sweep-level stages, build the report from every job
folder, then exit non-zero (1) naming the failed jobs when any failed (``experiments.job.sweep``);
the last line printed names report.html by its absolute path; Ctrl-C during the report ends with a
one-line message, no partial ``report/`` (it is built in a hidden folder and renamed into place) and
exit 130."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("detbench")
INTERRUPTED = 130   # 128 + SIGINT, as a shell reports Ctrl-C


class ReportOnMultirunEnd(Callback):
    """Runs in the launching process after the last job of a sweep (any launcher): reads the
    sweep folder's job folders (failed ones included) and writes ``<sweep dir>/report/``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from analysis.report import build_report
        from experiments.job.sweep import sweep_outcome
        from experiments.stages import run_sweep_stages

        sweep_dir = Path(config.hydra.sweep.dir)
        report = None
        try:
            run_sweep_stages(config, sweep_dir)   # before the report, which reads what they wrote
            report = build_report(sweep_dir, print_tables=True).with_suffix(".html").resolve()
        except KeyboardInterrupt:   # build_report leaves no partial report/ behind
            print(f"detbench: interrupted while building the report of {sweep_dir}: no report written (the "
                  f"jobs' results are complete on disk); build it with: detbench-report {sweep_dir}",
                  file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED)
        except Exception as error:  # the jobs' results stay on disk whatever happens here
            log.error("the report of %s could not be built: %s: %s", sweep_dir,
                      type(error).__name__, error)
        outcome = sweep_outcome(sweep_dir)
        if outcome.failed:
            print(f"detbench: {outcome.message(sweep_dir)}", file=sys.stderr, flush=True)
        if report is not None:   # the sweep's last line, whatever failed: where to look
            print(f"\nreport: {report}", flush=True)
        if outcome.failed:
            sys.exit(1)
