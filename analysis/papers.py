"""The published figures and how far a run's setting is from theirs: ``analysis/papers.csv``
(gathered from the three papers and Michaelis et al.: detector, paper, dataset, training data,
split, metric, value, hardware, note), the "Published figures" table (the rows as printed), the
"Ours vs paper" table (our mean beside the paper's figure, the gap only where the run was made
in the paper's setting) and ``setting_differences`` (what separates a run from a paper row).
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from analysis.runs import ok_runs, pretrained_label
from analysis.summary import ACCURACY_COLUMNS
from analysis.table import MISSING, Table, mean_std

# Papers give AP in %, speeds as they are; our value is scaled to match.
PAPER_SCALE = {k: v[1] for k, v in ACCURACY_COLUMNS.items()} | {
    "top_correct": 1, "top_loc": 1, "top_other": 1, "top_bkg": 1} | {
    f"robust_{k}": 100 for k in ("p", "mpc", "rpc", "p_50", "mpc_50", "rpc_50")}


def load_papers() -> pd.DataFrame:
    """The published figures (``analysis/papers.csv``, gathered from the three papers)."""
    with resources.files("analysis").joinpath("papers.csv").open() as f:
        return pd.read_csv(f, dtype={"hardware": str, "note": str}).fillna("")


def published_table(runs: pd.DataFrame | None = None) -> Table:
    """The papers' figures as printed; given ``runs``, only the rows of their detectors and
    dataset families (voc, coco)."""
    papers = load_papers()
    if runs is not None:
        families = {dataset_family(d) for d in runs["dataset"]}
        papers = papers[papers["detector"].isin(set(runs["detector"])) & papers["dataset"].isin(families)]
    return Table("published", "Published figures (the papers, as printed)", papers, papers)


def dataset_family(name: str) -> str:
    name = str(name).lower()
    return next((f for f in ("voc", "coco") if name.startswith(f)), name)


def paper_table(runs: pd.DataFrame) -> Table:
    """Ours beside the papers for every finished setting whose detector and dataset (voc or
    coco) a paper row names; each row says the paper's training data, split and hardware, and
    whether the run was made in the paper's setting (``setting_differences``): only
    then is the gap "ours − paper" given, else the row says what differs."""
    papers, ok = load_papers(), ok_runs(runs)
    rows = []
    for (group, dataset), runs_of in ok.groupby(["group", "dataset"], sort=True):
        detector = runs_of["detector"].iat[0]
        match = papers[(papers["detector"] == detector)
                       & (papers["dataset"] == dataset_family(dataset))]
        for paper in match.itertuples():
            if paper.metric not in runs_of:
                continue
            values = pd.to_numeric(runs_of[paper.metric], errors="coerce").dropna()
            values = values * PAPER_SCALE.get(paper.metric, 1)
            split = runs_of["eval_split"].iat[0] if "eval_split" in runs_of else None
            differs = setting_differences(runs_of.iloc[0].to_dict(), paper._asdict())
            rows.append({"detector": group, "metric": paper.metric, "ours": values.mean(),
                         "setting": "as the paper" if not differs else "differs: " + "; ".join(differs),
                         "ours_std": values.std(ddof=1), "seeds": len(values),
                         "our_dataset": dataset, "our_split": split or MISSING,
                         "paper": paper.value, "paper_split": paper.split,
                         "paper_train": paper.train_data, "hardware": paper.hardware,
                         "source": paper.paper})
    data = pd.DataFrame(rows)
    if data.empty:
        return Table("ours_vs_paper", "Ours vs paper", data, data,
                     "No finished run was made in a paper's setting (detector and dataset "
                     "VOC or COCO as in analysis/papers.csv).")
    shown = data.drop(columns=["ours_std"]).copy()
    shown["ours"] = [mean_std(m, s, 2 if abs(m) < 10 else 1)
                     for m, s in zip(data["ours"], data["ours_std"])]
    gap = (data["ours"] - data["paper"]).round(1)
    shown.insert(3, "ours − paper", gap.where(data["setting"] == "as the paper"))   # paired only then
    return Table("ours_vs_paper", "Ours vs paper (AP in %; speeds on the hardware named)",
                 data, shown)


def _voc_years(train_data: str) -> list[int] | None:
    """'VOC07+12, expansion (SSD300*)' -> [2007, 2012]; None when not a VOC-only figure."""
    head = str(train_data).split(",")[0].strip()
    if not head.startswith("VOC") or "COCO" in head:
        return None
    return [2000 + int(y) for y in head[3:].split("+")]


def setting_differences(run: dict, paper: dict) -> list[str]:
    """What separates ``run`` (a metrics.json row) from the setting of ``paper`` (a row of
    analysis/papers.csv): from-scratch weights, a recipe other than experiment=paper_*, other
    training years, the SSD "expansion" (starred rows) used or not. Empty: the same setting."""
    run = {k: (None if not isinstance(v, (list, tuple)) and pd.isna(v) else v) for k, v in run.items()}
    differs = []
    weights = pretrained_label(run.get("weights_source"))
    if weights != "pretrained":
        differs.append("from scratch (paper: ImageNet-pretrained)" if weights == "from scratch"
                       else "weights not recorded (paper: ImageNet-pretrained)")
    if not isinstance(run.get("paper_name"), str) or not run.get("paper_name"):
        differs.append("not the paper's recipe (no experiment=paper_*)")
    wanted, ours = _voc_years(paper.get("train_data", "")), run.get("train_years")
    if wanted is not None and isinstance(ours, list) and sorted(int(y) for y in ours) != wanted:
        differs.append(f"trained on VOC {'+'.join(map(str, ours))} (paper: {paper['train_data']})")
    if str(run.get("detector", "")).startswith("ssd") and "metric" in paper \
            and not str(paper["metric"]).startswith(("fps", "num_", "gmacs")):
        starred = "expansion" in str(paper.get("train_data", ""))
        if run.get("augmentation") == "ssd" and not starred:
            differs.append("trained with expansion (this paper row: without)")
        elif run.get("augmentation") not in (None, "ssd") and starred:
            differs.append(f"augmentation {run.get('augmentation')} (paper: with expansion)")
    return differs
