"""The report's unit of output: a ``Table`` (numbers for the CSV, the same numbers formatted for
Markdown, LaTeX, HTML and the terminal) and the helpers that format cells and write tables.

Knows nothing of runs, papers or studies: every other analysis module builds on it.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.latex import to_latex

MISSING = "–"


@dataclass
class Table:
    """``name``: file stem; ``data``: numbers (CSV); ``shown``: formatted (Markdown, LaTeX)."""
    name: str
    title: str
    data: pd.DataFrame
    shown: pd.DataFrame
    note: str = ""


def mean_std(mean: float, std: float, decimals: int) -> str:
    """74.25, 0.5, 1 -> '74.2 ± 0.5'; a nan std (one seed) shows the mean alone."""
    if pd.isna(mean):
        return MISSING
    return f"{mean:.{decimals}f}" + ("" if pd.isna(std) else f" ± {std:.{decimals}f}")


def value_with_interval(value: float, low: float, high: float, scale: float = 100.0, decimals: int = 1) -> str:
    """0.358, 0.331, 0.384 -> '35.8 [33.1, 38.4]'; the value alone when a bound is NaN; '–' when
    the value is."""
    if pd.isna(value):
        return MISSING
    text = f"{value * scale:.{decimals}f}"
    if not (pd.isna(low) or pd.isna(high)):
        text += f" [{low * scale:.{decimals}f}, {high * scale:.{decimals}f}]"
    return text


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() in ("", MISSING, "nan")


def _integral(column: pd.Series) -> bool:
    numbers = pd.to_numeric(column, errors="coerce")
    present = column.map(lambda v: not _blank(v))
    return (column.dtype.kind == "f" and bool(present.any())
            and bool((numbers[present] == numbers[present].round()).all()))


def tidy(shown: pd.DataFrame) -> pd.DataFrame:
    """What a reader sees: columns with no value dropped, a text column that repeats an earlier
    one dropped, whole-number float columns printed as integers (8732, not 8732.0)."""
    shown = shown.copy()
    keep, seen = [], []
    for name in shown.columns:
        column = shown[name]
        if column.map(_blank).all():
            continue
        if column.dtype == object and pd.to_numeric(column, errors="coerce").isna().all():
            text = tuple(column.astype(str))
            if text in seen:
                continue
            seen.append(text)
        if _integral(column):
            shown[name] = [MISSING if _blank(v) else str(int(round(float(v)))) for v in column]
        keep.append(name)
    return shown[keep]


def to_markdown(table: Table) -> str:
    shown = tidy(table.shown)
    body = shown.to_markdown(index=False) if len(shown) else "_(empty)_"
    return f"{body}\n\n{table.note}".rstrip() + "\n"


def to_html(table: Table) -> str:
    """The table as an HTML fragment: the formatted cells (numbers and intervals kept on one
    line by the page's style), its title as caption, its note below."""
    shown = tidy(table.shown)
    body = shown.to_html(index=False, na_rep=MISSING, border=0, classes="data", escape=True)
    body = body.replace("<table", f"<table id='table-{table.name}'", 1)
    return (f"<div class='table'><p class='caption'><b>{html.escape(table.title)}</b></p>{body}"
            + (f"<p class='note'>{html.escape(table.note)}</p>" if table.note else "") + "</div>")


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """``out_dir/<name>.md``, ``.csv`` (numbers) and ``.tex`` (booktabs, see ``analysis.latex``);
    returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")}
    paths["md"].write_text(f"## {table.title}\n\n{to_markdown(table)}")
    table.data.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(to_latex(table.name, table.title, tidy(table.shown), table.note, MISSING))
    return paths


def print_table(table: Table) -> None:
    print(f"\n{table.title}\n{to_markdown(table)}")
