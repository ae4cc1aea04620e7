"""``detbench-report RUNS_DIR``: every run under RUNS_DIR -> ``RUNS_DIR/report/``:
``report.md``, a self-contained ``report.html`` (images embedded), ``tables/*.{md,csv,tex}``
and ``plots/*.{png,pdf}``. One failed run, one plot that cannot be drawn, or one section that
raises never stops the report: failed runs are listed as failed, and what could not be done is
said in the report.

The report is ``SECTIONS``, in reading order: each ``section(ctx) -> Section | None`` (see
``analysis.section``) returns its tables, plots and sentences. The page shows every section's
tables in that order, then the sentences, then the plots, then the problems.
"""
from __future__ import annotations

import argparse
import base64
import html
from pathlib import Path

import pandas as pd

from analysis import (
    coverage,
    fidelity,
    headline,
    ladder,
    papers,
    plot_runs,
    plots,
    provenance,
    robustness,
    significance_tables,
    summary,
    sweeps,
)
from analysis.errors import run_errors
from analysis.runs import error_summary, load_runs, ok_runs, read_csv
from analysis.section import Context, Section, run_sections
from analysis.table import print_table, to_html, to_markdown, write_table

PRINTED = ("headline", "accuracy", "speed", "pairwise", "claims")   # the tables printed in the terminal


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
    published = papers.load_papers()
    published = published[published["metric"].str.startswith("top_")]
    theirs = published.pivot_table(index="detector", columns="metric", values="value")
    theirs.index = [f"{d} (paper, VOC07)" for d in theirs.index]
    return pd.concat([ours.dropna(how="all"), theirs]) if len(ours) else theirs.iloc[:0]


def read_folder(runs_dir: Path) -> Context:
    """Every run under ``runs_dir``, labelled, with its error breakdown: what the sections read."""
    problems: list[str] = []
    runs = load_runs(runs_dir)
    runs["label"] = _label(runs) if len(runs) else []
    errors = _errors(runs, problems)
    return Context(runs_dir, runs_dir / "report", runs, errors, problems)


def runs_section(ctx: Context) -> Section:
    return Section("Runs", [summary.runs_table(ctx.runs)])


def accuracy_and_speed_section(ctx: Context) -> Section:
    ok, means, out = ok_runs(ctx.runs), ctx.summary, ctx.plot_dir
    devices = ", ".join(sorted(set(ok["device"].dropna().astype(str)))) if "device" in ok else ""
    images = (ctx.draw("speed vs accuracy", lambda: plots.plot_speed_vs_accuracy(means, out, devices))
              + ctx.draw("AP by size", lambda: plots.plot_ap_by_size(means, out))
              + ctx.draw("boxes scored vs AP", lambda: plots.plot_candidates_vs_ap(means, out)))
    return Section("Accuracy and speed", [ctx.accuracy, ctx.speed], images)


def per_class_section(ctx: Context) -> Section:
    return Section("Per-class AP", [summary.per_class_table(_per_class(ctx.runs))])


def curves_section(ctx: Context) -> Section:
    """Precision/recall and training curves, and a grid of detections, per setting."""
    by_group = {g: [Path(p) for p in rows["path"]] for g, rows in ok_runs(ctx.runs).groupby("label")}
    out = ctx.plot_dir
    images = (ctx.draw("precision/recall curves", lambda: plot_runs.plot_pr_curves(by_group, out))
              + ctx.draw("training curves", lambda: plot_runs.plot_training(by_group, out))
              + ctx.draw("detection grid", lambda: plot_runs.plot_detection_grid(
                  {g: dirs[0] for g, dirs in by_group.items()}, out)))
    return Section("Curves and detections", plots=images)


def papers_section(ctx: Context) -> Section:
    return Section("Ours vs paper", [papers.paper_table(ctx.labelled)])


def errors_section(ctx: Context) -> Section:
    table = summary.error_table(ctx.errors)
    images = (ctx.draw("error breakdown", lambda: plots.plot_error_breakdown(table.data, ctx.plot_dir))
              + ctx.draw("top detections", lambda: plots.plot_top_detections(_top_shares(ctx.runs), ctx.plot_dir)))
    return Section("Error breakdown", [table], images)


def published_section(ctx: Context) -> Section:
    return Section("Published figures", [papers.published_table()])


def provenance_section(ctx: Context) -> Section:
    return Section("Provenance", [provenance.provenance_table(ctx.runs), provenance.incomplete_table(ctx.labelled)])


def fidelity_section(ctx: Context) -> Section:
    return Section("Paper fidelity", [fidelity.fidelity_table()])


# The report, in reading order: a new study adds its section here (see analysis/section.py).
SECTIONS = [
    headline.section,      # first: the claims with their conditions (analysis/headline.py)
    runs_section,
    accuracy_and_speed_section,
    per_class_section,
    curves_section,
    papers_section,
    errors_section,
    coverage.section,
    sweeps.section,
    robustness.section,
    published_section,
    provenance_section,
    fidelity_section,
    significance_tables.section,
    significance_tables.variance_section,
    ladder.section,
]


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
            md.append(f"**{content.title}**\n\n{to_markdown(content)}")
            body.append(to_html(content))
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
    when print_tables, prints the accuracy-by-size, speed, pairwise and claims tables in the
    terminal. Returns the path of report.md. Never raises because one run or section failed."""
    runs_dir = Path(runs_dir)
    ctx = read_folder(runs_dir)
    runs, out = ctx.runs, ctx.out
    sections = run_sections(SECTIONS, ctx)
    all_tables = [table for section in sections for table in section.tables]
    for table in all_tables:
        write_table(table, out / "tables")
    n_bad = int((runs["status"] != "ok").sum())
    devices = sorted(set(ok_runs(runs)["device"].dropna().astype(str))) if "device" in runs else []
    blocks = [("p", f"{len(runs)} runs under {runs_dir.resolve()}; {n_bad} did not finish "
                    f"(listed below with their error). Accuracy in % (COCO AP@[.5:.95] unless "
                    f"named), as mean ± sample std (ddof=1) over the seeds that finished; speed "
                    f"measured on: {', '.join(devices) or 'no run'}. Tables: tables/ "
                    f"(Markdown, CSV with metrics.json's units, LaTeX); plots: plots/ (PNG, PDF).")]
    for table in all_tables:
        blocks += [("h", table.title.split(" (")[0]), ("table", table)]
    blocks += [("p", text) for section in sections for text in section.sentences]
    blocks += [("h", "Plots")] + [("image", p) for section in sections for p in section.plots]
    if ctx.problems:
        blocks += [("h", "Problems while building this report")] + [("p", p) for p in ctx.problems]
    markdown, page = _render(blocks, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(page)
    if print_tables:
        for table in all_tables:
            if table.name in PRINTED:
                print_table(table)
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
