"""Hydra callbacks: when a sweep ends, run the sweep-level stages, then build the report from every job folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("detbench")


class ReportOnMultirunEnd(Callback):
    """Runs in the launching process after the last job of a sweep (any launcher): reads the
    sweep folder's job folders (failed ones included) and writes ``<sweep dir>/report/``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from analysis.report import build_report
        from experiments.stages import run_sweep_stages

        sweep_dir = Path(config.hydra.sweep.dir)
        run_sweep_stages(config, sweep_dir)   # before the report, which reads what they wrote
        try:
            path = build_report(sweep_dir, print_tables=True)
        except Exception as error:  # the jobs' results stay on disk whatever happens here
            log.error("the report of %s could not be built: %s: %s", sweep_dir,
                      type(error).__name__, error)
            return
        print(f"\nreport: {path.with_suffix('.html').resolve()}")
