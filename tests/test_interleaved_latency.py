"""Claim (b)'s interleaved timing: the order alternates so drift hits every detector alike, and the
claims read the sweep-level file in place of the separate bench stages'."""
from __future__ import annotations

import json

import numpy as np
import torch

from analysis.claims import evaluate_claims
from analysis.runs import load_runs
from experiments.studies.interleaved_latency import time_interleaved
from tests.test_claims import _ap, _sweep


def test_rounds_alternate_the_order_and_drift_hits_both():
    calls, clock = [], [0.0]

    def timer(name):
        def call(images):
            clock[0] += 1.0                                  # a machine slowing down: each call slower
            calls.append(name)
            return (0.0, 0.0, clock[0] / 1000, 0.0), []
        return call

    samples = time_interleaved({"a": timer("a"), "b": timer("b")}, [torch.zeros(3, 8, 8)], batches=4, warmup=0)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(samples["a"]) == 4 and abs(np.median(samples["a"]) - np.median(samples["b"])) < 1e-9


def test_claims_prefer_the_interleaved_timing(tmp_path):
    _sweep(tmp_path, _ap(0.30, 0.10, 0.45), _ap(0.20, 0.05, 0.35), _ap(0.40, 0.20, 0.50))
    # the separate bench stages said YOLO 20 ms, SSD 50 ms; interleaved on real images: the same speed
    rng = np.random.default_rng(0)
    timed = {str(tmp_path / i): {"detector": d, "samples_ms": (40 + rng.standard_normal(30)).tolist()}
             for i, d in (("0", "ssd300_cpu"), ("1", "yolov1_cpu"))}
    (tmp_path / "sweep_stages").mkdir()
    (tmp_path / "sweep_stages" / "interleaved_latency.json").write_text(json.dumps({"runs": timed}))
    runs = load_runs(tmp_path)
    runs["group"] = runs["detector"]
    claims = evaluate_claims(runs)
    row = claims[claims["claim"].str.startswith("(b)")].iloc[0]
    assert "interleaved, real val images" in row["evidence"] and row["verdict"].startswith("not resolved")
