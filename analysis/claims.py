"""The seed article's claims tested on a sweep, one row per (claim, metric, detectors), each with its
effect, interval, p, Holm family, verdict and the conditions that bound it:

(a) SSD is more accurate than YOLO v1 — on AP and on AP50 (Holm over the claim's 2 comparisons);
(b) YOLO v1 is faster than SSD (median latency at batch 1, interval of the difference; the
    interleaved timing of the sweep-level stage when the runs hold it);
(c) Faster R-CNN is the most accurate — AP and AP50, above every other detector (Holm over its
    comparisons);
(d) SSD does worse on small objects, as an interaction: SSD's APl − APs gap against each other
    detector's, paired (Holm over those), with SSD's APs against theirs as evidence;
(e) SSD has the better speed/accuracy trade-off: supported iff SSD significantly dominates at least
    one detector (better on one axis, not significantly worse on the other) and no detector
    dominates SSD; contradicted when one dominates SSD; "not resolved: all on the front" otherwise.

Every comparison is ``significance.paired_stat`` (seed s of A with seed s of B; with one seed the
image bootstrap alone, and the verdict is *provisional*). A claim's Holm family is the comparisons
that claim makes, so runs that are not in a claim never change its verdict. Families come from
metrics.json's ``family``; a pretrained reference (``tv_*``, or ``weights_source`` not random) is
never pooled with from-scratch runs: claims use from-scratch groups. A claim whose detectors or
facts the sweep lacks is *not testable*, saying why; so is a speed claim whose detector was timed only on a
busy machine (``speed_reliable: false``), naming the run. Every delta is A − B as the row names it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.provenance import training_facts
from analysis.runs import SCRATCH, family_of, ok_runs
from analysis.significance import (
    gap_of,
    interleaved_samples,
    latency_samples,
    metric_of,
    paired_stat,
    replicates_by_seed,
)
from analysis.stats import ALPHA, holm, latency_difference, median_interval, p_text
from analysis.timing_trust import busy_runs, trusted

SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved (within noise)"
NOT_TESTABLE = "not testable"
ON_FRONT = "not resolved: all on the front"
PROVISIONAL = "provisional: {} — one training seed, image sampling only"
CLAIM_METRICS = {"map": "AP", "map_50": "AP50"}
COLUMNS = ["dataset", "claim", "metric", "detectors", "effect", "low", "high", "unit", "p", "holm", "verdict",
           "conditions", "evidence"]


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def verdict(side: int, seeds: int, untestable: bool = False) -> str:
    """+1 supported / -1 contradicted / 0 not resolved; one seed: the provisional wording."""
    if untestable:
        return NOT_TESTABLE
    word = SUPPORTED if side > 0 else CONTRADICTED if side < 0 else UNRESOLVED
    return PROVISIONAL.format(word) if seeds < 2 else word


def side(result: dict) -> int:
    """+1 / -1: significantly (Holm p < 0.05) in favour of / against A; 0 within noise or untestable."""
    if "problem" in result or not result.get("p_holm", 1.0) < ALPHA:
        return 0
    return 1 if result["delta"] > 0 else -1


def with_holm(results: list[dict]) -> list[dict]:
    """The Holm-adjusted p of each comparison within its claim's own family, as ``p_holm``."""
    adjusted = holm([r.get("p", math.nan) for r in results])
    for r, p in zip(results, adjusted):
        r["p_holm"] = p
    return results


def accuracy_text(name_a: str, name_b: str, r: dict, label: str = "ΔAP") -> str:
    if "problem" in r:
        return f"{name_a} vs {name_b}: not testable: {r['problem']}"
    return (f"{label} ({name_a} − {name_b}) = {_pct(r['delta'])} [{_pct(r['low'])}, {_pct(r['high'])}] points, "
            f"{p_text(r)}, Holm p = {r['p_holm']:.2g}")


def speed(latency: dict, dataset: str, a: str, b: str, busy: dict | None = None) -> dict:
    """a faster than b? median latency difference a − b (ms) with interval; side +1: a faster
    (the interval below 0), -1: a slower. ``busy`` ((dataset, group) -> run names timed on a busy
    machine, ``timing_trust.busy_runs``): a side without samples because its runs were busy is
    not testable, naming them (``busy`` in the result)."""
    if (dataset, a) not in latency or (dataset, b) not in latency:
        named = [run for g in (a, b) if (dataset, g) not in latency for run in (busy or {}).get((dataset, g), [])]
        if named:
            return {"problem": f"speed of run {', '.join(named)} timed on a busy machine (speed_reliable: false): "
                               "re-time it with stages=[bench] on a quiet machine", "side": 0, "busy": named}
        return {"problem": "no latency samples (bench stage)", "side": 0}
    first, second = sorted((a, b))  # one resampling per pair, whichever way it is asked
    diff, low, high = latency_difference(latency[(dataset, second)], latency[(dataset, first)])
    if second != a:
        diff, low, high = -diff, -high, -low
    return {"diff": diff, "low": low, "high": high, "side": 1 if high < 0 else -1 if low > 0 else 0}


def speed_text(a: str, b: str, s: dict, latency: dict, dataset: str) -> str:
    if "problem" in s:
        return f"{a} vs {b}: {s['problem']}"
    ma, la, ha = median_interval(latency[(dataset, a)])
    mb, lb, hb = median_interval(latency[(dataset, b)])
    return (f"median latency b1: {a} {ma:.1f} ms [{la:.1f}, {ha:.1f}], {b} {mb:.1f} ms [{lb:.1f}, {hb:.1f}]; "
            f"{a} − {b} = {s['diff']:+.1f} ms [{s['low']:+.1f}, {s['high']:+.1f}]")


def group_families(runs: pd.DataFrame) -> dict[str, tuple[str | None, bool]]:
    """group -> (family 'ssd' / 'yolo' / 'frcnn' / None, told by name) of its first run:
    metrics.json's ``family``, or the detector-name rule where the run folder has none."""
    return {group: family_of(rows.iloc[0].get("family"), rows.iloc[0]["detector"])
            for group, rows in runs.groupby("group", sort=True)}


def pretrained(rows: pd.DataFrame) -> bool:
    """A pretrained reference: a ``tv_*`` detector, or weights not from scratch."""
    row = rows.iloc[0]
    source = row.get("weights_source")
    return str(row["detector"]).startswith("tv_") or (isinstance(source, str) and source not in ("", SCRATCH))


def conditions(rows: pd.DataFrame) -> str:
    """What bounds a claim: training iterations, input sizes, weights, seeds, split (the claim's own
    interval method is its ``test``, added by ``Claims.add``)."""
    parts = []

    def values(key, fmt=str):
        if key not in rows:
            return "?"
        v = sorted({fmt(x) for x in rows[key].dropna()})
        return "/".join(v) if v else "?"

    parts.append(f"{values('train_iterations', lambda x: str(int(x)))} iterations")
    if "input_h" in rows:
        sizes = sorted({f"{int(h)}x{int(w)}" for h, w in zip(rows["input_h"], rows["input_w"]) if pd.notna(h)})
        parts.append("input " + "/".join(sizes))
    parts.append("from scratch")
    seeds = rows.groupby("group")["seed"].nunique()
    parts.append(f"seeds {int(seeds.min())}" + ("" if seeds.min() == seeds.max() else f"-{int(seeds.max())}"))
    split = values("eval_split")
    parts.append(f"split {split}" if split != "?" else "split ? (not recorded)")
    return ", ".join(parts)


class Claims:
    """Builds the rows for one dataset: ``rows`` after ``run()``."""

    def __init__(self, dataset: str, runs: pd.DataFrame, by_seed: dict, latency: dict, timing: str = "",
                 busy: dict | None = None):
        self.dataset, self.runs, self.by_seed, self.latency, self.timing = dataset, runs, by_seed, latency, timing
        self.busy = busy or {}   # (dataset, group) -> runs timed on a busy machine: in no speed claim
        families = group_families(runs)
        self.references = sorted(g for g, r in runs.groupby("group") if pretrained(r))
        scratch = [g for g in sorted(runs["group"].unique()) if g not in self.references]
        self.groups = scratch
        self.of = {f: [g for g in scratch if families[g][0] == f] for f in ("ssd", "yolo", "frcnn")}
        self.rows: list[dict] = []

    def reps(self, group: str) -> dict:
        return self.by_seed.get((self.dataset, group), {})

    def add(self, claim: str, metric: str, names: list[str], result: dict | None, verdict_text: str,
            evidence: str, family: str = "", unit: str = "AP points") -> None:
        r = result or {}
        scoped = self.runs[self.runs["group"].isin(names)] if names else self.runs.iloc[:0]
        self.rows.append({"dataset": self.dataset, "claim": claim, "metric": metric, "detectors": ", ".join(names),
                          "effect": r.get("delta", r.get("diff", math.nan)), "low": r.get("low", math.nan),
                          "high": r.get("high", math.nan), "unit": unit,
                          "p": p_text(r) if "p" in r else "", "holm": family, "verdict": verdict_text,
                          "conditions": (conditions(scoped) if len(scoped) else "")
                          + (f", interval: {r['test']}" if "test" in r else ""), "evidence": evidence})

    def missing(self, claim: str, what: str) -> None:
        self.add(claim, "", [], None, NOT_TESTABLE, f"the sweep lacks {what} (from-scratch runs)")

    def seeds(self, *groups) -> int:
        return min((len(self.reps(g)) for g in groups), default=0)

    def run(self) -> list[dict]:
        self.accuracy_claims()
        self.speed_claim()
        self.small_objects_claim()
        self.trade_off_claim()
        return self.rows

    def accuracy_claims(self) -> None:
        claim = "(a) SSD more accurate than YOLO v1"
        if not self.of["ssd"] or not self.of["yolo"]:
            self.missing(claim, "SSD" if not self.of["ssd"] else "YOLO v1")
        for s in self.of["ssd"]:
            for y in self.of["yolo"]:
                results = with_holm([paired_stat(self.reps(s), self.reps(y), metric_of(m)) for m in CLAIM_METRICS])
                family = f"Holm over this claim's {len(results)}: {s} − {y} on {', '.join(CLAIM_METRICS.values())}"
                for label, r in zip(CLAIM_METRICS.values(), results):
                    self.add(claim, label, [s, y], r, verdict(side(r), r.get("seeds", 0), "problem" in r),
                             accuracy_text(s, y, r, f"Δ{label}"), family)
        claim = "(c) Faster R-CNN the most accurate"
        if not self.of["frcnn"]:
            self.missing(claim, "Faster R-CNN")
        for f in self.of["frcnn"]:
            others = [g for g in self.groups if g != f]
            if not others:
                self.missing(claim, "other detectors")
                continue
            pairs = [(g, m) for m in CLAIM_METRICS for g in others]
            results = with_holm([paired_stat(self.reps(f), self.reps(g), metric_of(m)) for g, m in pairs])
            family = f"Holm over this claim's {len(results)}: {f} against {', '.join(others)} on AP, AP50"
            for m, label in CLAIM_METRICS.items():
                mine = [r for (g, mm), r in zip(pairs, results) if mm == m]
                sides = [side(r) for r in mine]
                untestable = any("problem" in r for r in mine)
                worst = min(mine, key=lambda r: r.get("delta", math.inf))
                v = -1 if -1 in sides else 1 if all(x == 1 for x in sides) else 0
                texts = [accuracy_text(f, g, r, f"Δ{label}") for (g, mm), r in zip(pairs, results) if mm == m]
                seeds = min(r.get("seeds", 0) for r in mine)
                self.add(claim, label, [f, *others], worst, verdict(v, seeds, untestable), "; ".join(texts), family)

    def speed_claim(self) -> None:
        claim = "(b) YOLO v1 faster than SSD"
        if not self.of["ssd"] or not self.of["yolo"]:
            self.missing(claim, "SSD" if not self.of["ssd"] else "YOLO v1")
        for s in self.of["ssd"]:
            for y in self.of["yolo"]:
                sp = speed(self.latency, self.dataset, y, s, self.busy)
                self.add(claim, "latency b1", [y, s], sp, verdict(sp["side"], 2, "problem" in sp),
                         speed_text(y, s, sp, self.latency, self.dataset) + f" ({self.timing})",
                         f"one comparison; timing: {self.timing}", unit="ms")

    def small_objects_claim(self) -> None:
        claim = "(d) SSD worse on small objects (APl − APs gap vs others)"
        if not self.of["ssd"]:
            self.missing(claim, "SSD")
        for s in self.of["ssd"]:
            others = [g for g in self.groups if g not in self.of["ssd"]]
            if not others:
                self.missing(claim, "a detector to set SSD's gap against")
                continue
            gaps = with_holm([paired_stat(self.reps(s), self.reps(g), gap_of("map_large", "map_small"))
                              for g in others])
            small = with_holm([paired_stat(self.reps(s), self.reps(g), metric_of("map_small")) for g in others])
            sides = [side(r) for r in gaps]
            v = -1 if -1 in sides else 1 if all(x == 1 for x in sides) else 0
            evidence = "; ".join(accuracy_text(f"{s} gap", f"{g} gap", r, "Δ(APl − APs)")
                                 for g, r in zip(others, gaps))
            evidence += " | " + "; ".join(accuracy_text(s, g, r, "ΔAPs") for g, r in zip(others, small))
            worst = min(gaps, key=lambda r: r.get("delta", math.inf))
            self.add(claim, "APl − APs", [s, *others], worst,
                     verdict(v, min(r.get("seeds", 0) for r in gaps), any("problem" in r for r in gaps)),
                     evidence, f"Holm over this claim's {len(gaps)} interactions")
        self.input_size_remedy()

    def input_size_remedy(self) -> None:
        """With SSD at two input sizes: does the larger input lift SSD's APs?"""
        if "input_h" not in self.runs or len(self.of["ssd"]) < 2:
            return
        size = {g: float(self.runs[self.runs["group"] == g]["input_h"].max()) for g in self.of["ssd"]}
        ordered = sorted((g for g in size if not math.isnan(size[g])), key=size.get)
        if len(ordered) < 2 or size[ordered[0]] == size[ordered[-1]]:
            return
        big, little = ordered[-1], ordered[0]
        r = with_holm([paired_stat(self.reps(big), self.reps(little), metric_of("map_small"))])[0]
        self.add("(d') a larger input lifts SSD's APs", "APs", [big, little], r,
                 verdict(side(r), r.get("seeds", 0), "problem" in r), accuracy_text(big, little, r, "ΔAPs"),
                 "one comparison")

    def trade_off_claim(self) -> None:
        claim = "(e) SSD the better speed/accuracy trade-off (dominance)"
        if not self.of["ssd"]:
            self.missing(claim, "SSD")
        for s in self.of["ssd"]:
            others = [g for g in self.groups if g != s]
            if not others:
                self.missing(claim, "other detectors")
                continue
            acc = with_holm([paired_stat(self.reps(s), self.reps(g), metric_of("map")) for g in others])
            dominates, dominated, evidence, busy_runs = [], [], [], []
            for g, a in zip(others, acc):
                sp = speed(self.latency, self.dataset, s, g, self.busy)
                busy_runs += sp.get("busy", [])
                x, v = side(a), sp["side"]
                if (x == 1 and v != -1) or (v == 1 and x != -1):
                    dominates.append(g)
                if (x == -1 and v != 1) or (v == -1 and x != 1):
                    dominated.append(g)
                evidence.append(f"vs {g}: {accuracy_text(s, g, a)}; {speed_text(s, g, sp, self.latency, self.dataset)}")
            matched = ap_at_matched_latency(trusted(self.runs), s, others)
            if matched:
                evidence.append(matched)
            untestable = (all("problem" in a for a in acc) or not any((self.dataset, g) in self.latency for g in others)
                          or bool(busy_runs))   # a speed it needs was timed on a busy machine
            seeds = min(a.get("seeds", 0) for a in acc)
            if untestable:
                text = NOT_TESTABLE
            elif dominated:
                text = verdict(-1, seeds)
            elif dominates:
                text = verdict(1, seeds)
            else:
                text = ON_FRONT if seeds >= 2 else PROVISIONAL.format(ON_FRONT)
            summary = (f"SSD dominates: {', '.join(dominates) or 'none'}; "
                       f"dominated by: {', '.join(dominated) or 'none'}")
            if busy_runs:
                summary = (f"not testable: the speed of run {', '.join(dict.fromkeys(busy_runs))} was timed on a busy "
                           f"machine (re-time with stages=[bench] on a quiet machine) | {summary}")
            self.add(claim, "AP × latency b1", [s, *others], None, text, summary + " | " + " | ".join(evidence),
                     f"Holm over this claim's {len(acc)} AP comparisons")


def ap_at_matched_latency(runs: pd.DataFrame, ssd: str, others: list[str]) -> str:
    """SSD's AP against the others' front interpolated at SSD's median latency (AP, ms means)."""
    if "latency_ms_p50_b1" not in runs or "map" not in runs:
        return ""
    means = runs.groupby("group")[["map", "latency_ms_p50_b1"]].mean(numeric_only=True)
    points = means.loc[[g for g in others if g in means.index]].dropna().sort_values("latency_ms_p50_b1")
    if ssd not in means.index or len(points) < 2:
        return ""
    at = means.loc[ssd, "latency_ms_p50_b1"]
    lat, ap = points["latency_ms_p50_b1"].to_numpy(), points["map"].to_numpy()
    if not lat[0] <= at <= lat[-1]:
        return ""
    front = np.maximum.accumulate(ap)           # the best AP at or below each latency
    interp = float(np.interp(at, lat, front))
    return (f"AP at SSD's latency ({at:.1f} ms): SSD {100 * means.loc[ssd, 'map']:.1f}, the others' front "
            f"{100 * interp:.1f} (interpolated on their front)")


def evaluate_claims(runs: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """runs: load_runs' table with ``group``. -> one row per (dataset, claim, metric, detectors):
    effect A − B, low, high, p (as measured), holm (the claim's family), verdict, conditions,
    evidence. ``pairs`` (the Pairwise table) is not used: a claim corrects over its own family."""
    ok = ok_runs(runs)
    by_seed, latency, interleaved = replicates_by_seed(runs), latency_samples(runs), interleaved_samples(runs)
    busy = busy_runs(runs)
    rows = []
    for dataset, of_dataset in ok.groupby("dataset", sort=True):
        groups = set(of_dataset["group"])
        timed = {k: v for k, v in interleaved.items() if k[0] == dataset and k[1] in groups}
        # interleaved timing of real images when the sweep ran it for two or more of these groups
        rows += Claims(dataset, of_dataset, by_seed, timed if len(timed) >= 2 else latency,
                       "interleaved, real val images" if len(timed) >= 2 else "separate bench stages",
                       {} if len(timed) >= 2 else busy).run()
    frame = pd.DataFrame(rows, columns=COLUMNS)
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

