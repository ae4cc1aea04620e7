"""The report's headline: one row per claim with its effect, interval, verdict, scope and the
conditions that bound it (``headline_table``), one sentence per claim (``headline_sentences``),
and the split the claims rest on. Built from ``claims.evaluate_claims`` (``ctx.claims``); the
report puts it first (``report.SECTIONS``).
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.claims import NOT_TESTABLE
from analysis.runs import ok_runs
from analysis.section import Context, Section
from analysis.significance_tables import claims_table
from analysis.table import Table

TITLE = "The answer"


def effect_text(row) -> str:
    """'+13.8 [+12.5, +15.1] AP points' (ms for latency); '–' where there is no number."""
    if row["effect"] is None or math.isnan(row["effect"]):
        return "–"
    k = 100.0 if row["unit"] == "AP points" else 1.0
    return f"{k * row['effect']:+.1f} [{k * row['low']:+.1f}, {k * row['high']:+.1f}] {row['unit']}"


def split_sentence(runs: pd.DataFrame) -> str:
    """Which split produced the numbers the claims use, and whether any decision used it."""
    ok = ok_runs(runs)
    if "eval_split" not in ok or ok["eval_split"].isna().all():
        return ("The runs do not record which split they were scored on (run folders written before "
                "issue 27): the claims may rest on the validation split that chose the settings.")
    splits = sorted(set(ok["eval_split"].dropna().astype(str)))
    images = ""
    if "eval_images" in ok:
        counts = sorted({int(x) for x in pd.to_numeric(ok["eval_images"], errors="coerce").dropna()})
        images = f" ({'/'.join(map(str, counts))} images)" if counts else ""
    if splits == ["test"]:
        return (f"The claims rest on the held-out test split{images}: no decision (configs, learning rates, "
                "early stopping, the choice of RoIAlign or YOLO's head) used it; validation used the val split.")
    return (f"The claims rest on the {' / '.join(splits)} split{images}; where that is val, the same images "
            "also served the choices, so the verdicts are optimistic.")


def schema_sentence(runs: pd.DataFrame) -> str | None:
    """Names the run folders written before issue 27 (metrics.json without ``schema_version``) and
    the facts they lack; None when every folder is current."""
    ok = ok_runs(runs)
    version = pd.to_numeric(ok["schema_version"], errors="coerce") if "schema_version" in ok else pd.Series(
        float("nan"), index=ok.index)
    old = ok[version.isna() | (version < 2)]
    if not len(old):
        return None
    names = ", ".join(str(r) for r in old["run"].head(5)) + (" ..." if len(old) > 5 else "")
    return (f"{len(old)} run folder(s) written before issue 27 ({names}): metrics.json has no schema_version, "
            "interval_method (their own intervals are percentile ones, which under-cover), family (told by the "
            "detector's name), eval_split or eval_images; the claims recompute their intervals from the stored "
            "replicates and mark what is not recorded.")


def headline_table(claims: pd.DataFrame) -> Table:
    """One row per claim row of ``claims``: claim, metric, detectors, effect [interval], p, verdict,
    scope (the Holm family) and conditions."""
    shown = pd.DataFrame([{
        "claim": r["claim"], "metric": r["metric"], "detectors (A, B, ...)": r["detectors"],
        "effect A − B [95%]": effect_text(r), "p": r["p"] or "–", "verdict": r["verdict"],
        "scope": r["holm"] or "–", "conditions": r["conditions"] or "–"} for _, r in claims.iterrows()])
    note = ("Each verdict holds only under its conditions (training iterations, input size, from scratch, seeds, "
            "split, interval method). 'provisional': one training seed, image sampling only. "
            "'not testable': a fact or run the claim needs is missing (the Claims table says which).")
    return Table("headline", "Headline: the seed article's claims on this sweep", claims, shown, note)


def headline_sentences(claims: pd.DataFrame) -> list[str]:
    """One sentence per claim row: what was found, how sure, under which conditions."""
    out = []
    for _, r in claims.iterrows():
        who = f" ({r['detectors']})" if r["detectors"] else ""
        if r["verdict"] == NOT_TESTABLE:
            out.append(f"{r['claim']}{who}: not testable — {r['evidence']}.")
            continue
        metric = f" on {r['metric']}" if r["metric"] else ""
        p = f", {r['p']}" if r["p"] else ""
        out.append(f"{r['claim']}{metric}{who}: {effect_text(r)}{p} — {r['verdict']} "
                   f"({r['holm']}; {r['conditions']}).")
    return out


def section(ctx: Context) -> Section | None:
    """"The answer": the headline table first, then the claims with their evidence, the split
    sentence and one sentence per claim (the page puts this section first)."""
    claims = ctx.claims
    if not len(claims):
        return None
    return Section(TITLE, [headline_table(claims), claims_table(ctx.labelled, claims=claims)],
                   sentences=[s for s in (split_sentence(ctx.runs), schema_sentence(ctx.runs)) if s]
                   + headline_sentences(claims))
