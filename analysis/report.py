"""``detbench-report RUNS_DIR``: every run under RUNS_DIR -> ``RUNS_DIR/report/``:
``report.md``, a self-contained ``report.html`` (images embedded), ``tables/*.{md,csv,tex}``
and ``plots/*.{png,pdf}``. One failed run, or one plot that cannot be drawn, never stops the
report: failed runs are listed as failed, and what could not be drawn is said in the report.
"""
from __future__ import annotations

import argparse
import base64
import html
import sys
import traceback
from pathlib import Path

import pandas as pd

from analysis import (
    coverage,
    fidelity,
    ladder,
    plot_runs,
    plots,
    provenance,
    robustness,
    significance_tables,
    sweeps,
    tables,
)
from analysis.errors import run_errors
from analysis.runs import error_summary, load_runs, ok_runs, read_csv


def _label(runs: pd.DataFrame) -> pd.Series:
    """Plot label per run: the group, plus the dataset when the folder holds several."""
    if runs["dataset"].nunique() > 1:
        return runs["group"] + " (" + runs["dataset"] + ")"
    return runs["group"]


def _errors(runs: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
    """Every finished run's error breakdown, stacked; adds the top-detection shares
    (``top_correct``, ...) to ``runs`` as columns so they sit beside the papers'."""
    frames = []
    for i, run in ok_runs(runs).iterrows():
        try:
            breakdown, shares = run_errors(Path(run["path"]))
        except Exception as exc:   # one run's files never stop the report; say why in it
            problems.append(f"error breakdown skipped for {run['run']}: {exc}")
            continue
        for key, value in shares.items():
            runs.loc[i, key] = value
        frames.append(breakdown.reset_index().assign(group=run["label"], dataset=run["dataset"],
                                                     run=run["run"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _per_class(runs: pd.DataFrame) -> pd.DataFrame:
    frames = [read_csv(run["path"], "per_class.csv") for _, run in ok_runs(runs).iterrows()]
    frames = [f.assign(group=r["label"], dataset=r["dataset"], ap=f["ap"].where(f["ap"] >= 0))
              for f, (_, r) in zip(frames, ok_runs(runs).iterrows())
              if f is not None and {"ap", "class_name"} <= set(f.columns)]   # -1: no ground truth
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _top_shares(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean top-detection shares per label, then the YOLO paper's figures."""
    keys = [k for k in ("top_correct", "top_loc", "top_other", "top_bkg") if k in runs]
    ours = ok_runs(runs).groupby("label")[keys].mean() if keys else pd.DataFrame()
    papers = tables.load_papers()
    papers = papers[papers["metric"].str.startswith("top_")]
    theirs = papers.pivot_table(index="detector", columns="metric", values="value")
    theirs.index = [f"{d} (paper, VOC07)" for d in theirs.index]
    return pd.concat([ours.dropna(how="all"), theirs]) if len(ours) else theirs.iloc[:0]


def _plots(runs: pd.DataFrame, summary: pd.DataFrame, errors: pd.DataFrame, out: Path,
           problems: list[str]) -> list[Path]:
    ok = ok_runs(runs)
    summary = summary[summary["seeds"] > 0] if "seeds" in summary else summary
    by_group = {g: [Path(p) for p in rows["path"]] for g, rows in ok.groupby("label")}
    devices = ", ".join(sorted(set(ok["device"].dropna().astype(str)))) if "device" in ok else ""
    error_data = tables.error_table(errors).data
    jobs = [
        ("speed vs accuracy", lambda: plots.plot_speed_vs_accuracy(summary, out, devices)),
        ("AP by size", lambda: plots.plot_ap_by_size(summary, out)),
        ("boxes scored vs AP", lambda: plots.plot_candidates_vs_ap(summary, out)),
        ("precision/recall curves", lambda: plot_runs.plot_pr_curves(by_group, out)),
        ("training curves", lambda: plot_runs.plot_training(by_group, out)),
        ("detection grid", lambda: plot_runs.plot_detection_grid(
            {g: dirs[0] for g, dirs in by_group.items()}, out)),
        ("error breakdown", lambda: plots.plot_error_breakdown(error_data, out)),
        ("top detections", lambda: plots.plot_top_detections(_top_shares(runs), out)),
        ("coverage vs size", lambda: coverage.plot_coverage_vs_size(
            coverage.coverage_rows(runs.assign(group=runs["label"])), summary, out) or None),
        ("resolution sweep", lambda: sweeps.plot_resolution(runs, out) or None),
        ("box budget", lambda: sweeps.plot_box_budget(runs, out) or None),
    ]
    written = []
    for what, draw in jobs:
        try:
            paths = draw()
        except Exception as exc:   # one plot never stops the report; say why in it
            problems.append(f"plot '{what}' not drawn: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            continue
        if paths is None:      # no run has coverage / no such sweep in the folder: nothing to say
            continue
        if not paths:
            problems.append(f"plot '{what}' not drawn: no run holds the numbers it needs")
        written += [p for p in paths if p.suffix == ".png"]
    return written


def _render(blocks: list, out: Path) -> tuple[str, str]:
    """Blocks (kind, content) -> (Markdown, self-contained HTML)."""
    md, body = [], []
    for kind, content in blocks:
        if kind == "h":
            md.append(f"## {content}\n")
            body.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            md.append(f"{content}\n")
            body.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            md.append(f"**{content.title}**\n\n{tables.to_markdown(content)}")
            body.append(f"<h3>{html.escape(content.title)}</h3>"
                        + content.shown.to_html(index=False, na_rep=tables.MISSING, border=0)
                        + (f"<p class='note'>{html.escape(content.note)}</p>" if content.note
                           else ""))
        elif kind == "image":
            rel = content.relative_to(out).as_posix()
            md.append(f"![{content.stem}]({rel})  \n[PDF]({Path(rel).with_suffix('.pdf')})\n")
            data = base64.b64encode(content.read_bytes()).decode()
            body.append(f"<figure><img alt='{content.stem}' src='data:image/png;base64,{data}'>"
                        f"<figcaption>{html.escape(content.stem)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1250px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{padding:3px 9px;"
             "border-bottom:1px solid #ccc;text-align:right}img{max-width:100%}"
             ".note{color:#555;font-size:90%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>detbench report</title>"
            f"<style>{style}</style></head><body><h1>detbench report</h1>{''.join(body)}"
            f"</body></html>")
    return "# detbench report\n\n" + "\n".join(md), page


def build_report(runs_dir: Path, print_tables: bool = True) -> Path:
    """Reads every run under runs_dir, writes runs_dir/'report'/ (report.md, report.html
    self-contained with images embedded, tables as .md/.csv/.tex, plots as .png/.pdf) and,
    when print_tables, prints the accuracy-by-size table and the speed table in the terminal.
    Returns the path of report.md. Never raises because one run failed."""
    runs_dir = Path(runs_dir)
    out = runs_dir / "report"
    problems: list[str] = []
    runs = load_runs(runs_dir)
    runs["label"] = _label(runs) if len(runs) else []
    errors = _errors(runs, problems)
    labelled = runs.assign(group=runs["label"])
    accuracy, speed = tables.accuracy_table(labelled), tables.speed_table(labelled)
    all_tables = [tables.runs_table(runs), accuracy, speed,
                  tables.per_class_table(_per_class(runs)), tables.paper_table(labelled),
                  tables.error_table(errors), coverage.coverage_table(labelled), tables.published_table(),
                  provenance.provenance_table(runs), provenance.incomplete_table(labelled),
                  fidelity.fidelity_table()]
    robust_tables, robust_images = robustness.report_parts(runs, out / "plots", problems)
    all_tables[-4:-4] = sweeps.report_tables(runs) + robust_tables   # before the published figures
    significance = significance_tables.report_tables(labelled, problems)
    all_tables += significance + ladder.report_tables(labelled, problems)   # R-CNN / Fast R-CNN sweeps
    for table in all_tables:
        tables.write_table(table, out / "tables")
    summary = accuracy.data.merge(speed.data, on=["group", "dataset"], how="outer",
                                  suffixes=("", "_speed")) if len(accuracy.data) else accuracy.data
    images = _plots(runs, summary, errors, out / "plots", problems) + robust_images
    n_bad = int((runs["status"] != "ok").sum())
    devices = sorted(set(ok_runs(runs)["device"].dropna().astype(str))) if "device" in runs else []
    blocks = [("p", f"{len(runs)} runs under {runs_dir.resolve()}; {n_bad} did not finish "
                    f"(listed below with their error). Accuracy in % (COCO AP@[.5:.95] unless "
                    f"named), as mean ± sample std (ddof=1) over the seeds that finished; speed "
                    f"measured on: {', '.join(devices) or 'no run'}. Tables: tables/ "
                    f"(Markdown, CSV with metrics.json's units, LaTeX); plots: plots/ (PNG, PDF).")]
    for table in all_tables:
        blocks += [("h", table.title.split(" (")[0]), ("table", table)]
    blocks += [("p", text) for text in significance_tables.variance_sentences(labelled)]
    blocks += [("h", "Plots")] + [("image", p) for p in images]
    if problems:
        blocks += [("h", "Problems while building this report")] + [("p", p) for p in problems]
    markdown, page = _render(blocks, out)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(page)
    if print_tables:
        for table in (accuracy, speed, *significance):
            tables.print_table(table)
        for run in runs[runs["status"] != "ok"].itertuples():
            print(f"{run.status}: {run.run} ({run.detector}, seed {run.seed}): "
                  f"{error_summary(run.error)}")
    return out / "report.md"


def main() -> None:
    parser = argparse.ArgumentParser(prog="detbench-report", description=__doc__.split(":")[0])
    parser.add_argument("runs_dir", type=Path, help="a folder of runs: one job, a sweep, or more")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    args = parser.parse_args()
    if not args.runs_dir.is_dir():
        parser.error(f"{args.runs_dir}: no such folder")
    path = build_report(args.runs_dir, print_tables=not args.quiet)
    print(f"report written: {path} (and {path.with_suffix('.html').name})")


if __name__ == "__main__":
    main()
