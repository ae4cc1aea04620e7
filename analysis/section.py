"""The analysis end of a study: ``section(ctx) -> Section | None``, registered in
``analysis.report.SECTIONS`` (the report's reading order).

A section reads the finished runs through ``Context`` and returns what it adds to the report: its
tables (each written to ``tables/`` as .md/.csv/.tex and shown under its title), its plots (PNGs
already saved under ``ctx.plot_dir``) and its sentences. None: the folder holds nothing for it.
The report runs every section once, inside one wrapper: a section that raises is named, with its
error, under "Problems while building this report" and in the log; the others go on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from analysis import summary
from analysis.significance import pairwise
from analysis.table import Table

log = logging.getLogger("analysis.report")


@dataclass
class Section:
    """What one section adds: ``tables`` in order, ``plots`` (PNG paths), ``sentences`` (shown
    first); ``captions``: plot file stem -> what to read from it (``analysis.page.PLOT_CAPTIONS``
    holds the defaults); ``appendix``: reference material, shown after every other section."""
    title: str
    tables: list[Table] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    appendix: bool = False


@dataclass
class Context:
    """What every section reads. ``runs``: ``runs.load_runs`` with ``label`` (the group, plus the
    dataset when the folder holds several) and the error breakdown's top-detection shares
    (``top_correct``, ...); ``labelled``: the same with ``group`` set to ``label``; ``errors``: every
    finished run's error breakdown, stacked; ``problems``: what could not be done, said in the
    report (sections append to it)."""
    runs_dir: Path
    out: Path
    runs: pd.DataFrame
    errors: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    @property
    def plot_dir(self) -> Path:
        return self.out / "plots"

    @cached_property
    def labelled(self) -> pd.DataFrame:
        return self.runs.assign(group=self.runs["label"])

    @cached_property
    def claims(self) -> pd.DataFrame:
        """``claims.evaluate_claims`` on the labelled runs, once for every section that shows them."""
        from analysis.claims import evaluate_claims  # claims -> significance -> runs: kept off import time
        return evaluate_claims(self.labelled)

    @cached_property
    def pairs(self) -> pd.DataFrame:
        """``significance.pairwise`` of the labelled runs: the paired bootstrap every verdict reads."""
        return pairwise(self.labelled)

    @cached_property
    def accuracy(self) -> Table:
        return summary.accuracy_table(self.labelled)

    @cached_property
    def speed(self) -> Table:
        return summary.speed_table(self.labelled)

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Accuracy and speed means per (group, dataset) with at least one finished seed, one row
        each: what the plots draw."""
        accuracy, speed = self.accuracy.data, self.speed.data
        if "runtime" in speed:   # runtime rows (bench.runtimes) are the speed table's; the plots draw PyTorch's
            speed = speed[speed["runtime"] == "pytorch"]
        means = accuracy.merge(speed, on=["group", "dataset"], how="outer",
                               suffixes=("", "_speed")) if len(accuracy) else accuracy
        return means[means["seeds"] > 0] if "seeds" in means else means

    def draw(self, what: str, plot: Callable[[], list[Path] | None]) -> list[Path]:
        """The PNGs ``plot()`` saved. One plot never stops the report: an error, or an empty list
        (no run holds the numbers it needs), is said in ``problems``; None means nothing to draw."""
        try:
            paths = plot()
        except Exception as exc:   # one plot never stops the report; say why in it
            self.problems.append(f"plot '{what}' not drawn: {type(exc).__name__}: {exc}")
            log.exception("plot '%s' not drawn", what)
            return []
        if paths is None:      # no run has coverage / no such sweep in the folder: nothing to say
            return []
        if not paths:
            self.problems.append(f"plot '{what}' not drawn: no run holds the numbers it needs")
        return [p for p in paths if p.suffix == ".png"]


def run_sections(sections: list[Callable[[Context], Section | None]], ctx: Context) -> list[Section]:
    """Every section in order, each inside the one wrapper; the sections that returned something."""
    done = []
    for section in sections:
        name = section.__module__.rsplit(".", 1)[-1] if section.__name__ == "section" else section.__name__
        try:
            result = section(ctx)
        except Exception as exc:   # one failure never stops the report; say it in the report and the log
            ctx.problems.append(f"section '{name}' failed: {type(exc).__name__}: {exc}")
            log.exception("report section '%s' failed", name)
            continue
        if result is not None:
            done.append(result)
    return done
