"""Short names for settings in tables and plots, and the legend that says what each stands for.

A run's ``variant`` (``runs.load_runs``) lists every override that differs across the folder,
with full keys: ``detector.model.width=0.5 train.iterations=30``. In a plot of ten settings such
names squeeze the axes to thumbnails, so each setting gets a short label instead: the detector,
then the differing keys by their last part only (``ssd300 width=0.5 iterations=30``); where that is
still longer than ``MAX_LABEL`` characters, or two settings would share it, the variants are
numbered (``ssd300 v1``) and the legend maps each label to its overrides in full.
"""
from __future__ import annotations

import pandas as pd

MAX_LABEL = 28


def _short(variant: str) -> str:
    """'detector.model.width=0.5 train.iterations=30' -> 'width=0.5 iterations=30'."""
    parts = []
    for override in str(variant).split():
        key, _, value = override.partition("=")
        parts.append(f"{key.lstrip('+~').rsplit('.', 1)[-1]}={value}" if value else key)
    return " ".join(parts)


def short_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run, its setting's short label (see the module doc); the dataset is added in
    parentheses when the folder holds several."""
    if runs.empty:
        return pd.Series([], dtype=object, index=runs.index)
    variant = runs["variant"].fillna("").astype(str)
    short = runs["detector"].astype(str) + variant.map(lambda v: f" {_short(v)}" if v else "")
    settings = pd.DataFrame({"detector": runs["detector"], "variant": variant, "short": short}).drop_duplicates()
    too_long = settings["short"].str.len().max() > MAX_LABEL
    clash = settings.groupby("short")["variant"].nunique().max() > 1
    if too_long or clash:
        numbered = {}
        for detector, rows in settings.groupby("detector", sort=False):
            variants = sorted(v for v in rows["variant"].unique() if v)
            numbered |= {(detector, v): f"{detector} v{i}" for i, v in enumerate(variants, 1)}
        short = pd.Series([numbered.get((d, v), d) for d, v in zip(runs["detector"], variant)], index=runs.index)
    if runs["dataset"].nunique() > 1:
        short = short + " (" + runs["dataset"].astype(str) + ")"
    return short


def legend(runs: pd.DataFrame) -> pd.DataFrame:
    """label -> the overrides it stands for, one row per setting that has a variant."""
    rows = runs[runs["variant"].fillna("") != ""][["label", "variant"]].drop_duplicates()
    return rows.rename(columns={"label": "label", "variant": "overrides"}).sort_values("label")
