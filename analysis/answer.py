"""The report's first section, "The answer": one sentence per claim with its verdict, then the
table of claims and their evidence (``significance_tables.claims_table``).

This is the page's slot for the headline: issue 27's verdict table replaces ``section`` here as
the first entry of ``analysis.report.SECTIONS``; the page keeps it first whatever it holds.
"""
from __future__ import annotations

import pandas as pd

from analysis.section import Context, Section
from analysis.significance_tables import claims_table

TITLE = "The answer"


def claim_sentences(claims: pd.DataFrame) -> list[str]:
    """'On synthetic, (a) SSD more accurate than YOLO v1 (ssd300, yolov1): supported.' per claim
    that could be tested; one sentence for those that could not."""
    testable = claims[claims["verdict"] != "–"]
    out = [f"On {r.dataset}, {r.claim} ({r.detectors}): {r.verdict}." for r in testable.itertuples()]
    untestable = claims[claims["verdict"] == "–"]["claim"].unique()
    if len(untestable):
        out.append("Not testable with the detectors in this report: " + "; ".join(untestable) + ".")
    return out


def section(ctx: Context) -> Section | None:
    if ctx.runs.empty:
        return None
    table = claims_table(ctx.labelled, ctx.pairs)
    shown = table.shown
    table.shown = shown[[c for c in ("claim", "verdict", "dataset", "detectors", "evidence") if c in shown]]
    return Section(TITLE, [table], sentences=claim_sentences(table.data))
