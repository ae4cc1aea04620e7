"""``detbench-rescore SWEEP_DIR nms_thresh=0.3 score_thresh=0.05``: re-score every finished run of a
sweep from its own checkpoint at other post-processing thresholds, on the same images.

Each run folder of ``SWEEP_DIR`` (a direct subfolder with ``metrics.json`` status ok and
``checkpoints/last.pt``) is evaluated again with its saved config (``.hydra/config.yaml``), the
given thresholds (``nms_thresh`` / ``score_thresh``: the detectors' shared names under
``detector.model``; any other ``key=value`` is a config override too), ``stages=[eval]`` and
``weights=<its run folder>``. Results go to ``SWEEP_DIR/rescore_<overrides>/<run name>/`` (the
originals are never touched) and that folder gets its own report. Exit status: 0 when every run
was re-scored, 1 when any failed (each named), 2 for a bad argument.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments.job.layout import SAVED_CONFIG, last_checkpoint

SHORT = {"nms_thresh": "detector.model.nms_thresh", "score_thresh": "detector.model.score_thresh"}


def finished_runs(sweep_dir: Path) -> list[Path]:
    import json

    runs = []
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        try:
            ok = json.loads((folder / "metrics.json").read_text()).get("status") == "ok"
        except (OSError, ValueError, AttributeError):
            ok = False
        if ok and last_checkpoint(folder).is_file() and (folder / SAVED_CONFIG).is_file():
            runs.append(folder)
    return runs


def rescore_config(run_dir: Path, overrides: list[str]):
    """The run's saved config with ``overrides`` (``key=value``, short names expanded),
    ``stages=[eval]``, its own weights, and no resume / overwrite."""
    cfg = OmegaConf.load(run_dir / SAVED_CONFIG)
    for item in overrides:
        key, value = item.split("=", 1)
        OmegaConf.update(cfg, SHORT.get(key, key), OmegaConf.create(f"v: {value}").v, force_add=False)
    OmegaConf.update(cfg, "stages", ["eval"])
    OmegaConf.update(cfg, "weights", str(run_dir.resolve()))
    OmegaConf.update(cfg, "resume", False)
    OmegaConf.update(cfg, "overwrite", False)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detbench-rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder (or any folder of run folders)")
    parser.add_argument("overrides", nargs="+", help="nms_thresh=..., score_thresh=..., or key=value")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad or not args.sweep.is_dir():
        print(f"detbench-rescore: error: {'not key=value: ' + str(bad) if bad else f'{args.sweep} is not a folder'}",
              file=sys.stderr)
        return 2
    runs = finished_runs(args.sweep)
    if not runs:
        print(f"detbench-rescore: error: {args.sweep} holds no finished run with a checkpoint", file=sys.stderr)
        return 2
    from analysis.report import build_report
    from experiments.run import run

    out = args.sweep / ("rescore_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", "_".join(args.overrides)))
    failed = []
    for run_dir in runs:
        try:
            cfg = rescore_config(run_dir, args.overrides)
        except Exception as error:   # a key the run's config lacks, a bad value
            failed.append(f"{run_dir.name}: {type(error).__name__}: {error}")
            continue
        metrics = run(cfg, out / run_dir.name)
        print(f"{run_dir.name}: {metrics['status']}  AP {metrics.get('map', float('nan')):.4f}")
        if metrics["status"] != "ok":
            failed.append(f"{run_dir.name}: {metrics.get('error')}")
    print(f"report: {build_report(out)}")
    if failed:
        print(f"detbench-rescore: {len(failed)} of {len(runs)} run(s) failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
