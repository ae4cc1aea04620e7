"""Which differences hold between the settings of a sweep: paired tests between runs (the frame
behind the report's "Pairwise" table and the claims) and the latency samples the speed claims use;
the statistics themselves are ``analysis.stats`` (deltas A − B).

Reads run folders only: each run's ``bootstrap.npz`` (written by the evaluator: ``image_ids``
[B, N] the images of each replicate, ``category_ids`` [K], one float [B] array per metric,
``point_<metric>`` the metric on the images as given), ``metrics.json``'s ``eval_split`` and
``latency_ms_samples_b1`` (every timed batch, ms). Two runs are paired only when their replicates
drew the very same images (same ids, same bootstrap seed) of the same split on the same classes;
otherwise the pair is *not testable*, naming what differs.

* Pairwise: delta = A − B, seed s of A paired with seed s of B on the same image draws
  (``stats.paired_difference``: one seed, the image bootstrap with its replicate count, a
  *provisional* result; two or more, a t over the per-seed deltas with the image variance added),
  Holm-corrected over the pairs the table lists for a dataset, per metric; *significant* when the
  corrected p < 0.05, else *within noise*. Fewer than ``MIN_REPLICATES`` replicates, a metric
  a run lacks, other images or another split: not testable.
* Latency: the median of the timed batches (batch 1), its interval from 2000 bootstrap resamples
  of the batches (seeded); a speed difference holds when the interval of the difference of
  medians excludes 0.
"""
from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import ok_runs
from analysis.stats import ALPHA, half_sample_bias, holm, p_text, paired_difference

PAIR_METRICS = {"map": "AP", "map_50": "AP50", "map_small": "APs"}
MIN_REPLICATES = 100    # fewer bootstrap replicates than this: a pairwise test is not testable


def load_replicates(run_path) -> dict | None:
    """A run's bootstrap.npz as a dict of arrays, or None when the run has none."""
    path = Path(run_path) / "bootstrap.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def drawn_codes(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The two runs' replicate images as codes into one vocabulary of file name + content hash
    keys (``key_ids`` / ``image_keys`` in bootstrap.npz): (vocabulary [V] str, codes_a [B, N],
    codes_b [B', N'] int64; -1: an id without a key), or None for an npz written without keys.
    Integer codes, not strings: B = 10,000 replicates of 400 images stay a 32 MB array."""
    if any("image_keys" not in r or "key_ids" not in r for r in (a, b)):
        return None
    vocabulary = np.union1d(a["image_keys"], b["image_keys"])

    def codes(reps):
        order = np.argsort(reps["key_ids"])
        ids, code = reps["key_ids"][order], np.searchsorted(vocabulary, reps["image_keys"][order])
        pos = np.clip(np.searchsorted(ids, reps["image_ids"]), 0, max(len(ids) - 1, 0))
        found = (ids[pos] == reps["image_ids"]) if len(ids) else np.zeros(reps["image_ids"].shape, bool)
        return np.where(found, code[pos] if len(ids) else -1, -1)

    return vocabulary, codes(a), codes(b)


def same_images_problem(a: dict, b: dict) -> str | None:
    """None when the two runs' replicates drew the same images (by file name and content hash,
    never by id: an id is often a position) of the same split on the same classes, else why not."""
    if str(a.get("split", "val")) != str(b.get("split", "val")):
        return f"scored on different splits ({a.get('split', 'val')} / {b.get('split', 'val')})"
    codes = drawn_codes(a, b)
    if codes is None:
        return ("bootstrap.npz without image file names and hashes (written before they were saved): "
                "re-run stages=[eval] on it to pair it")
    vocabulary, codes_a, codes_b = codes
    for what, x, y, names in (("category ids", a["category_ids"], b["category_ids"], None),
                              ("images (file name#content hash)", codes_a, codes_b, vocabulary)):
        if x.shape != y.shape or not np.array_equal(x, y):
            only_a = sorted(set(np.unique(x).tolist()) - set(np.unique(y).tolist()))
            only_b = sorted(set(np.unique(y).tolist()) - set(np.unique(x).tolist()))
            if names is not None:
                only_a, only_b = ([str(names[c]) if c >= 0 else "?" for c in o] for o in (only_a, only_b))
            if only_a or only_b:
                return f"different {what}: only in one {only_a[:5]}, only in the other {only_b[:5]}"
            return f"same {what} but different replicates (bootstrap seed or count differs)"
    return None


def replicates_by_seed(runs: pd.DataFrame) -> dict:
    """(dataset, group) -> {seed: replicates dict} over finished runs with a bootstrap.npz."""
    out: dict = {}
    for _, run in ok_runs(runs).iterrows():
        reps = load_replicates(run["path"])
        if reps is not None:
            split = run.get("eval_split")
            reps["split"] = split if isinstance(split, str) and split else "val"
            reps["run"] = run.get("run", run["path"])
            out.setdefault((run["dataset"], run["group"]), {})[run["seed"]] = reps
    return out


def metric_of(metric: str):
    """The statistic ``metric`` of a replicates dict: (replicates [B], point)."""
    return lambda reps: (reps[metric], float(reps[f"point_{metric}"]))


def gap_of(high: str, low: str):
    """The statistic ``high − low`` of one run (e.g. APl − APs) on the same replicates."""
    return lambda reps: (reps[high] - reps[low], float(reps[f"point_{high}"] - reps[f"point_{low}"]))


def statistic_problem(reps: dict, statistic) -> str | None:
    """Why ``statistic`` cannot be read from one run's replicates, or None."""
    try:
        values, _ = statistic(reps)
    except KeyError as missing:
        return f"run {reps.get('run', '?')} has no replicates of {missing.args[0]}"
    if len(values) < MIN_REPLICATES:
        return f"run {reps.get('run', '?')} has {len(values)} bootstrap replicates (a test needs >= {MIN_REPLICATES})"
    return None


def paired_stat(reps_a: dict, reps_b: dict, statistic) -> dict:
    """delta = statistic(A) − statistic(B) over the seeds both ran (``stats.paired_difference``),
    or {"problem": why it is not testable}. ``reps_*``: seed -> replicates dict."""
    seeds = sorted(set(reps_a) & set(reps_b), key=str)
    if not seeds:
        return {"problem": "no common seed"}
    for s in seeds:
        problem = same_images_problem(reps_a[s], reps_b[s])
        problem = problem and f"seed {s}: {reps_a[s].get('run', 'A')} vs {reps_b[s].get('run', 'B')}: {problem}"
        problem = problem or statistic_problem(reps_a[s], statistic) or statistic_problem(reps_b[s], statistic)
        if problem:
            return {"problem": problem}
    a, b = [statistic(reps_a[s]) for s in seeds], [statistic(reps_b[s]) for s in seeds]
    bias = [delta_bias(reps_a[s], reps_b[s], statistic) for s in seeds]
    return paired_difference([x[0] for x in a], [x[0] for x in b], [x[1] for x in a], [x[1] for x in b],
                             bias=bias)


def halves_view(reps: dict) -> dict | None:
    """The run's half-sample values (``half_<metric>`` [H] in bootstrap.npz) under the metric names,
    with its point values, so a statistic reads them as it reads replicates; None for an npz
    written before the halves were saved."""
    if "half_size" not in reps or int(reps["half_size"]) < 1:
        return None
    return {**{k[len("half_"):]: v for k, v in reps.items() if k.startswith("half_") and k != "half_size"},
            **{k: v for k, v in reps.items() if k.startswith("point_")}}


def delta_bias(reps_a: dict, reps_b: dict, statistic) -> float | None:
    """The estimator's bias of statistic(A) − statistic(B) from the two runs' halves (the same halves:
    same bootstrap seed, same images; ``stats.half_sample_bias``), or None without halves."""
    views = halves_view(reps_a), halves_view(reps_b)
    if views[0] is None or views[1] is None or int(reps_a["half_size"]) != int(reps_b["half_size"]):
        return None
    try:
        (ha, pa), (hb, pb) = statistic(views[0]), statistic(views[1])
    except KeyError:
        return None
    if len(ha) != len(hb):
        return None
    return half_sample_bias(np.asarray(ha) - np.asarray(hb), pa - pb, int(reps_a["image_ids"].shape[1]),
                            int(reps_a["half_size"]))


def paired(reps_a: dict, reps_b: dict, metric: str) -> dict:
    """delta = A − B of ``metric`` (see ``paired_stat``)."""
    return paired_stat(reps_a, reps_b, metric_of(metric))


def pairwise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, pair of groups, metric): delta A - B, interval, p, Holm p, verdict."""
    by_seed = replicates_by_seed(runs)
    rows = []
    for dataset in sorted({d for d, _ in by_seed}):
        groups = sorted(g for d, g in by_seed if d == dataset)
        for metric in PAIR_METRICS:
            block = [{"dataset": dataset, "a": a, "b": b, "metric": metric,
                      **paired(by_seed[(dataset, a)], by_seed[(dataset, b)], metric)}
                     for a, b in combinations(groups, 2)]
            adjusted = holm([r.get("p", math.nan) for r in block])
            for row, p_holm in zip(block, adjusted):
                row["p_holm"], row["family_size"] = p_holm, len(block)
                row["p_text"] = p_text(row) if "problem" not in row else ""
                row["verdict"] = ("not testable" if "problem" in row else
                                  "significant" if p_holm < ALPHA else "within noise")
            rows += block
    return pd.DataFrame(rows)


def interleaved_samples(runs: pd.DataFrame) -> dict:
    """(dataset, group) -> float [n] ms from the sweep-level interleaved timing
    (``<sweep>/sweep_stages/interleaved_latency.json``, written by
    ``experiments.studies.interleaved_latency``: real validation images, detectors alternating in one
    process); {} when no sweep folder of these runs holds one."""
    ok = ok_runs(runs)
    if not len(ok):
        return {}
    by_path = {str(Path(p).resolve()): (d, g) for p, d, g in zip(ok["path"], ok["dataset"], ok["group"])}
    out, seen = {}, set()
    for path in ok["path"]:
        for folder in Path(path).resolve().parents:
            found = folder / "sweep_stages" / "interleaved_latency.json"
            if found in seen or not found.is_file():
                continue
            seen.add(found)
            try:
                stored = json.loads(found.read_text())
            except (OSError, ValueError):
                continue
            if stored.get("speed_reliable") is False:   # timed on a busy machine: in no speed claim
                continue
            timed = stored.get("runs", {})
            for run, entry in timed.items():
                key = by_path.get(str(Path(run).resolve()))
                if key is not None and entry.get("samples_ms"):
                    out[key] = np.asarray(entry["samples_ms"], dtype=float)
    return out


def latency_samples(runs: pd.DataFrame, batch: int = 1) -> dict:
    """(dataset, group) -> float [n] ms of every timed batch at ``batch``, pooled over seeds; a run
    with ``speed_reliable: false`` (the busy-machine guard) is left out."""
    key, out = f"latency_ms_samples_b{batch}", {}
    if key not in runs:
        return out
    for _, run in ok_runs(runs).iterrows():
        if run.get("speed_reliable") is False:   # timed on a busy machine: in no speed claim
            continue
        if isinstance(run[key], str) and run[key].strip():
            values = np.array([float(x) for x in run[key].split()])
            out.setdefault((run["dataset"], run["group"]), []).append(values)
    return {k: np.concatenate(v) for k, v in out.items()}
