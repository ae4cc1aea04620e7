"""``detbench-report RUNS_DIR``: every run under RUNS_DIR -> ``RUNS_DIR/report/``:
``report.md``, a self-contained ``report.html`` (images embedded), ``tables/*.{md,csv,tex}``
and ``plots/*.{png,pdf}``. One failed run, one plot that cannot be drawn, or one section that
raises never stops the report: failed runs are listed as failed, and what could not be done is
said in the report.

The report is ``SECTIONS``, in reading order: the answer first, then the conditions that bound
it, accuracy, speed, errors, examples, training, the studies, and the appendix (reference
material: papers, provenance, every run). Each ``section(ctx) -> Section | None`` (see
``analysis.section``) returns its sentences, tables and plots; ``analysis.page`` lays them out
under one heading per section with a table of contents and captions.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from analysis import (
    budget,
    conditions,
    coverage,
    diagnostics,
    fidelity,
    galleries,
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
    timing_trust,
    training_curves,
    tuning,
)
from analysis.errors import run_errors
from analysis.labels import short_labels
from analysis.page import render
from analysis.runs import error_summary, load_runs, ok_runs, read_csv
from analysis.section import Context, Section, run_sections
from analysis.table import print_table, write_table

PRINTED = ("headline", "accuracy", "speed", "pairwise", "claims")   # the tables printed in the terminal


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
    families = {papers.dataset_family(d) for d in runs["dataset"]}
    published = published[published["metric"].str.startswith("top_") & published["dataset"].isin(families)]
    theirs = published.pivot_table(index="detector", columns="metric", values="value")
    theirs.index = [f"{d} (paper, VOC07)" for d in theirs.index]
    return pd.concat([ours.dropna(how="all"), theirs]) if len(ours) else theirs.iloc[:0]


def read_folder(runs_dir: Path) -> Context:
    """Every run under ``runs_dir``, labelled, with its error breakdown: what the sections read."""
    problems: list[str] = []
    runs = load_runs(runs_dir)
    runs["label"] = short_labels(runs) if len(runs) else []
    errors = _errors(runs, problems)
    return Context(runs_dir, runs_dir / "report", runs, errors, problems)


def accuracy_section(ctx: Context) -> Section:
    out, by_group = ctx.plot_dir, _by_group(ctx)
    images = (ctx.draw("AP by size", lambda: plots.plot_ap_by_size(ctx.summary, out))
              + ctx.draw("precision/recall curves", lambda: plot_runs.plot_pr_curves(by_group, out))
              + ctx.draw("PR curves per class", lambda: diagnostics.plot_pr_per_class(by_group, out)))
    tables = [ctx.accuracy, significance_tables.pairwise_table(ctx.pairs),
              summary.per_class_table(_per_class(ctx.runs))]
    return Section("Accuracy", tables, images)


def speed_section(ctx: Context) -> Section:
    ok, means, out = ok_runs(ctx.runs), ctx.summary, ctx.plot_dir
    devices = ", ".join(sorted(set(ok["device"].dropna().astype(str)))) if "device" in ok else ""
    images = (ctx.draw("speed vs accuracy", lambda: plots.plot_speed_vs_accuracy(means, out, devices))
              + ctx.draw("boxes scored vs AP", lambda: plots.plot_candidates_vs_ap(means, out)))
    return Section("Speed", [ctx.speed], images, sentences=timing_trust.retime_sentences(ctx.runs))


def errors_section(ctx: Context) -> Section:
    table, out, by_group = summary.error_table(ctx.errors), ctx.plot_dir, _by_group(ctx)
    images = (ctx.draw("error breakdown", lambda: plots.plot_error_breakdown(table.data, out))
              + ctx.draw("confusion matrix", lambda: diagnostics.plot_confusion(by_group, out))
              + ctx.draw("P/R/F1 vs confidence", lambda: diagnostics.plot_prf_confidence(by_group, out))
              + ctx.draw("top detections", lambda: plots.plot_top_detections(_top_shares(ctx.runs), out)))
    return Section("Errors", [table], images)


def examples_section(ctx: Context) -> Section:
    """The detection grid at each detector's operating point and the galleries chosen by error."""
    by_group, out = _by_group(ctx), ctx.plot_dir
    first = {g: dirs[0] for g, dirs in by_group.items()}
    images = (ctx.draw("detection grid", lambda: plot_runs.plot_detection_grid(first, out))
              + ctx.draw("failure gallery", lambda: galleries.plot_failures(first, out))
              + ctx.draw("found by one, missed by another", lambda: galleries.plot_found_missed(first, out)))
    return Section("Examples", plots=images, sentences=[
        "Images are the validation images each run saved under samples/ (eval.samples); the galleries "
        "pick among them by error. Detections are shown at each detector's operating point: the score "
        "threshold that maximises F1 on the validation split."])


def training_section(ctx: Context) -> Section | None:
    images = ctx.draw("training curves", lambda: training_curves.plot_training(_by_group(ctx), ctx.plot_dir) or None)
    return Section("Training", plots=images) if images else None


def papers_section(ctx: Context) -> Section | None:
    table = papers.paper_table(ctx.labelled)
    return Section("Ours vs paper", [table], appendix=True) if len(table.data) else None


def published_section(ctx: Context) -> Section | None:
    table = papers.published_table(ctx.runs)
    return Section("Published figures", [table], appendix=True) if len(table.data) else None


def fidelity_section(ctx: Context) -> Section | None:
    table = fidelity.fidelity_table(ctx.runs)
    return Section("Paper settings", [table], appendix=True) if len(table.data) else None


def provenance_section(ctx: Context) -> Section:
    return Section("Provenance", [provenance.provenance_table(ctx.runs), provenance.incomplete_table(ctx.labelled)],
                   sentences=provenance.budget_sentences(ctx.labelled), appendix=True)


def runs_section(ctx: Context) -> Section:
    return Section("Runs", [summary.runs_table(ctx.runs)], appendix=True)


def variance_section(ctx: Context) -> Section:
    return significance_tables.variance_section(ctx)


# The report, in reading order: the answer, what bounds it, accuracy, speed, errors, studies, then
# the appendix (sections marked appendix=True). A new study adds its section here.
SECTIONS = [
    headline.section,          # first: the answer (claims with effect, interval, verdict, conditions)
    conditions.section,
    accuracy_section,
    speed_section,
    errors_section,
    examples_section,
    training_section,
    coverage.section,
    sweeps.section,
    budget.section,
    tuning.section,
    robustness.section,
    ladder.section,
    variance_section,
    papers_section,
    published_section,
    fidelity_section,
    provenance_section,
    runs_section,
]


def _by_group(ctx: Context) -> dict[str, list[Path]]:
    return {g: [Path(p) for p in rows["path"]] for g, rows in ok_runs(ctx.runs).groupby("label", sort=False)}


def build_report(runs_dir: Path, print_tables: bool = True) -> Path:
    """Reads every run under runs_dir, writes runs_dir/'report'/ (report.md, report.html
    self-contained with images embedded, tables as .md/.csv/.tex, plots as .png/.pdf) and,
    when print_tables, prints the accuracy-by-size, speed, pairwise and claims tables in the
    terminal. Returns the path of report.md. Never raises because one run or section failed."""
    runs_dir = Path(runs_dir)
    final = runs_dir / "report"
    building = runs_dir / ".report.partial"   # hidden: never a job folder, never read as a run
    shutil.rmtree(building, ignore_errors=True)
    try:
        path = _write_report(runs_dir, building, print_tables)
        _swap_into_place(building, final)
    except BaseException:   # Ctrl-C or an error: no partial report is left, the old one (if any) stays
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final / path.name


def _swap_into_place(building: Path, final: Path) -> None:
    """``building`` becomes ``final``; an older report there is replaced (renamed aside first, so a
    report folder is always whole: the old one or the new one)."""
    old = final.with_name(".report.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    building.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write_report(runs_dir: Path, out: Path, print_tables: bool) -> Path:
    """build_report's work, every file written under ``out`` (the folder being built)."""
    ctx = read_folder(runs_dir)
    ctx.out = out
    runs = ctx.runs
    sections = run_sections(SECTIONS, ctx)
    all_tables = [table for section in sections for table in section.tables]
    for table in all_tables:
        write_table(table, out / "tables")
    n_bad = int((runs["status"] != "ok").sum())
    intro = [f"{len(runs)} runs under {runs_dir.resolve()}; {n_bad} did not finish (Appendix: Runs). "
             "Accuracy in % (COCO AP@[.5:.95] unless named), mean ± sample std over the seeds that finished, "
             "[95% interval]. Tables: tables/ (Markdown, CSV in metrics.json's units, LaTeX); plots: plots/ "
             "(PNG, PDF)."]
    markdown, page = render(sections, intro, ctx.problems, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(page)
    if print_tables:
        for table in all_tables:
            if table.name in PRINTED:
                print_table(table)
        for sentence in timing_trust.retime_sentences(runs):   # timings from a busy machine: how to re-time
            print(sentence)
        for run in runs[runs["status"] != "ok"].itertuples():
            print(f"{run.status}: {run.run} ({run.detector}, seed {run.seed}): "
                  f"{error_summary(run.error)}")
    return out / "report.md"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="detbench-report",
        description="Build the report of a folder of runs: RUNS_DIR/report/report.html (self-contained: "
                    "open it in a browser), report.md, tables/ (Markdown, CSV, LaTeX) and plots/ (PNG, PDF). "
                    "Failed runs are listed, never hidden.")
    parser.add_argument("runs_dir", type=Path, help="a folder of runs: one job, a sweep, or more")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    args = parser.parse_args()
    if not args.runs_dir.is_dir():
        parser.error(f"{args.runs_dir}: no such folder")
    path = build_report(args.runs_dir, print_tables=not args.quiet)
    print(f"report written: {path.with_suffix('.html').resolve()} (and report.md, tables/, plots/ beside it)")


if __name__ == "__main__":
    main()
