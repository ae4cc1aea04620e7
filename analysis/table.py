"""The report's unit of output: a ``Table`` (numbers for the CSV, the same numbers formatted for
Markdown, LaTeX, HTML and the terminal) and the helpers that format cells and write tables.

Knows nothing of runs, papers or studies: every other analysis module builds on it.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_markdown(table: Table) -> str:
    body = table.shown.to_markdown(index=False) if len(table.shown) else "_(empty)_"
    return f"{body}\n\n{table.note}".rstrip() + "\n"


def to_html(table: Table) -> str:
    """The table as an HTML fragment: its title (h3), the formatted cells, its note."""
    return (f"<h3>{html.escape(table.title)}</h3>"
            + table.shown.to_html(index=False, na_rep=MISSING, border=0)
            + (f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""))


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """``out_dir/<name>.md``, ``.csv`` (numbers) and ``.tex`` (booktabs); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")}
    paths["md"].write_text(f"## {table.title}\n\n{to_markdown(table)}")
    table.data.to_csv(paths["csv"], index=False)
    tex = table.shown.to_latex(index=False, escape=True, caption=_latex_escape(table.title),
                               label=f"tab:{table.name}", na_rep=MISSING) \
        if len(table.shown) else f"% {table.title}: empty\n"
    paths["tex"].write_text(tex.replace("±", r"$\pm$").replace("−", "$-$").replace("–", "--")
                            .replace("≤", r"$\leq$"))
    return paths


def print_table(table: Table) -> None:
    print(f"\n{table.title}\n{to_markdown(table)}")
