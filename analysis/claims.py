"""The seed article's claims tested on a sweep, each *supported*, *contradicted* or *not resolved
(within noise)*, with its evidence:

(a) SSD is more accurate than YOLO v1 (COCO AP, paired, Holm-corrected p < 0.05);
(b) YOLO v1 is faster than SSD (median latency at batch 1, interval of the difference);
(c) Faster R-CNN is the most accurate (significantly above every other detector of the dataset);
(d) SSD does worse on small objects than on large (APl - APs on the same replicates);
(e) SSD has the better speed/accuracy trade-off, read as: SSD is on the Pareto front of AP and
    latency with significance, i.e. against every other detector SSD is significantly better on
    at least one axis. Contradicted when some detector dominates SSD (significantly better on
    one axis, not significantly worse on the other); not resolved otherwise.

Families come from metrics.json's ``family`` (the detector's class: SSD, YOLO, FasterRCNN); run
folders written without it fall back to the detector-name rule (``runs.FAMILY_NAME_RULES``) and
the Claims table's note names them. A claim whose detectors the sweep lacks is listed as not
testable. Every delta is A − B as the evidence names it (``analysis.stats``).
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.provenance import training_facts
from analysis.runs import family_of, ok_runs
from analysis.significance import latency_samples, replicates_by_seed
from analysis.stats import ALPHA, latency_difference, median_interval, paired_difference

SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved (within noise)"


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _accuracy(pairs: pd.DataFrame, dataset: str, a: str, b: str, metric: str = "map") -> dict:
    """delta a - b of ``metric`` from the pairwise table (sign flipped when stored as b - a)."""
    rows = pairs[(pairs["dataset"] == dataset) & (pairs["metric"] == metric)] if len(pairs) else pairs
    for x, y, sign in ((a, b, 1), (b, a, -1)):
        hit = rows[(rows["a"] == x) & (rows["b"] == y)] if len(rows) else rows
        if len(hit):
            row = hit.iloc[0].to_dict()
            if "problem" in row and isinstance(row["problem"], str):
                return {"problem": row["problem"]}
            low, high = (row["low"], row["high"]) if sign > 0 else (-row["high"], -row["low"])
            return {"delta": sign * row["delta"], "low": low, "high": high, "p": row["p_holm"],
                    "significant": row["p_holm"] < ALPHA}
    return {"problem": "no paired replicates"}


def _side(result: dict) -> int:
    """+1 / -1: significantly in favour of / against the first; 0 within noise or untestable."""
    if "problem" in result or not result.get("significant"):
        return 0
    return 1 if result["delta"] > 0 else -1


def _accuracy_text(name_a: str, name_b: str, r: dict, label: str = "ΔAP") -> str:
    if "problem" in r:
        return f"{name_a} vs {name_b}: {r['problem']}"
    return (f"{label} ({name_a} − {name_b}) = {_pct(r['delta'])} [{_pct(r['low'])}, {_pct(r['high'])}] "
            f"points, Holm p = {r['p']:.3g}")


def _speed(latency: dict, dataset: str, a: str, b: str) -> dict:
    """a faster than b? median latency difference a − b (ms) with interval; side +1: a faster
    (the interval below 0), -1: a slower."""
    if (dataset, a) not in latency or (dataset, b) not in latency:
        return {"problem": "no latency samples (bench stage)", "side": 0}
    first, second = sorted((a, b))  # one resampling per pair, whichever way it is asked
    diff, low, high = latency_difference(latency[(dataset, second)], latency[(dataset, first)])
    if second != a:
        diff, low, high = -diff, -high, -low
    side = 1 if high < 0 else -1 if low > 0 else 0
    return {"diff": diff, "low": low, "high": high, "side": side}


def _speed_text(a: str, b: str, s: dict, latency: dict, dataset: str) -> str:
    if "problem" in s:
        return f"{a} vs {b}: {s['problem']}"
    ma, la, ha = median_interval(latency[(dataset, a)])
    mb, lb, hb = median_interval(latency[(dataset, b)])
    return (f"median latency b1: {a} {ma:.1f} ms [{la:.1f}, {ha:.1f}], {b} {mb:.1f} ms [{lb:.1f}, {hb:.1f}]; "
            f"{a} − {b} = {s['diff']:+.1f} ms [{s['low']:+.1f}, {s['high']:+.1f}]")


def _verdict(side: int) -> str:
    return SUPPORTED if side > 0 else CONTRADICTED if side < 0 else UNRESOLVED


def _small_vs_large(by_seed: dict, dataset: str, group: str) -> dict:
    reps = by_seed.get((dataset, group), {})
    seeds = [s for s, r in reps.items() if "map_small" in r and "map_large" in r]
    if not seeds:
        return {"problem": "no replicates of APs / APl"}
    result = paired_difference([reps[s]["map_large"] for s in seeds], [reps[s]["map_small"] for s in seeds],
                               [reps[s]["point_map_large"] for s in seeds],
                               [reps[s]["point_map_small"] for s in seeds])   # APl − APs
    return {**result, "significant": result["p"] < ALPHA}


def group_families(runs: pd.DataFrame) -> dict[str, tuple[str | None, bool]]:
    """group -> (family 'ssd' / 'yolo' / 'frcnn' / None, told by name) of its first run:
    metrics.json's ``family``, or the detector-name rule where the run folder has none."""
    families = {}
    for group, rows in runs.groupby("group", sort=True):
        row = rows.iloc[0]
        families[group] = family_of(row.get("family"), row["detector"])
    return families


def evaluate_claims(runs: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """runs: load_runs' table with ``group``; pairs: ``significance.pairwise(runs)``.
    -> one row per (dataset, claim, detectors): claim, detectors, evidence, verdict."""
    ok = ok_runs(runs)
    by_seed, latency = replicates_by_seed(runs), latency_samples(runs)
    rows = []
    for dataset, of_dataset in ok.groupby("dataset", sort=True):
        groups = sorted(of_dataset["group"].unique())
        families = group_families(of_dataset)
        ssd, yolo, frcnn = ([g for g in groups if families[g][0] == f] for f in ("ssd", "yolo", "frcnn"))

        def add(claim, names, evidence, verdict, dataset=dataset):
            rows.append({"dataset": dataset, "claim": claim, "detectors": names, "evidence": evidence,
                         "verdict": verdict})

        missing = "not testable: the sweep lacks "
        for s in ssd or [None]:
            for y in yolo or [None]:
                if s is None or y is None:
                    add("(a) SSD more accurate than YOLO v1", "", missing + ("SSD" if s is None else "YOLO v1"), "–")
                    add("(b) YOLO v1 faster than SSD", "", missing + ("SSD" if s is None else "YOLO v1"), "–")
                    continue
                r = _accuracy(pairs, dataset, s, y)
                add("(a) SSD more accurate than YOLO v1", f"{s}, {y}", _accuracy_text(s, y, r), _verdict(_side(r)))
                sp = _speed(latency, dataset, y, s)
                add("(b) YOLO v1 faster than SSD", f"{y}, {s}", _speed_text(y, s, sp, latency, dataset),
                    _verdict(sp["side"]))
        for f in frcnn or [None]:
            others = [g for g in groups if g != f]
            if f is None or not others:
                add("(c) Faster R-CNN the most accurate", "", missing + ("Faster R-CNN" if f is None else "others"),
                    "–")
                continue
            results = {g: _accuracy(pairs, dataset, f, g) for g in others}
            sides = [_side(r) for r in results.values()]
            verdict = CONTRADICTED if -1 in sides else SUPPORTED if all(x == 1 for x in sides) else UNRESOLVED
            add("(c) Faster R-CNN the most accurate", ", ".join([f, *others]),
                "; ".join(_accuracy_text(f, g, r) for g, r in results.items()), verdict)
        for s in ssd or [None]:
            if s is None:
                add("(d) SSD worse on small objects than on large", "", missing + "SSD", "–")
                add("(e) SSD the better speed/accuracy trade-off", "", missing + "SSD", "–")
                continue
            r = _small_vs_large(by_seed, dataset, s)
            add("(d) SSD worse on small objects than on large", s,
                _accuracy_text(f"{s} APl", "APs", r, "Δ").replace("Holm p", "p"), _verdict(_side(r)))
            others = [g for g in groups if g != s]
            if not others:
                add("(e) SSD the better speed/accuracy trade-off", s, missing + "other detectors", "–")
                continue
            evidence, verdicts = [], []
            for g in others:
                acc, speed = _accuracy(pairs, dataset, s, g), _speed(latency, dataset, s, g)
                a, v = _side(acc), speed["side"]
                verdicts.append(1 if max(a, v) == 1 else -1 if min(a, v) == -1 else 0)
                evidence.append(f"vs {g}: {_accuracy_text(s, g, acc)}; {_speed_text(s, g, speed, latency, dataset)}")
            verdict = CONTRADICTED if -1 in verdicts else SUPPORTED if all(x == 1 for x in verdicts) else UNRESOLVED
            add("(e) SSD the better speed/accuracy trade-off", ", ".join([s, *others]), " | ".join(evidence),
                verdict)
    frame = pd.DataFrame(rows, columns=["dataset", "claim", "detectors", "evidence", "verdict"])
    return frame.assign(training=[_training(ok, r["dataset"], r["detectors"]) for _, r in frame.iterrows()])


def _training(ok: pd.DataFrame, dataset: str, detectors: str) -> str:
    """The training behind a claim: each named detector's budget and cost (its first seed), and
    'still improving' where its last validations were (the claim may move with a longer schedule)."""
    parts = []
    for group in [g.strip() for g in detectors.split(",") if g.strip()]:
        rows = ok[(ok["dataset"] == dataset) & (ok["group"] == group)]
        facts = training_facts(rows.iloc[0].to_dict()) if len(rows) else ""
        if facts:
            parts.append(f"{group}: {facts}")
    return "; ".join(parts)
