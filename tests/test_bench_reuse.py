"""The bench stage once per detector: a second run with the same key reuses the first's numbers
and names the run that measured them; another key measures again."""
from __future__ import annotations

import json

from experiments.speed.bench_reuse import bench_once, reuse_key


def test_second_run_reuses_the_first_runs_timings(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"fps_b1": 10.0 * len(calls)}

    key = reuse_key("ssd300_cpu", {"width": 0.125}, 5, "cpu", {"batch_sizes": [1, 8]})
    first = bench_once("../reuse", key, tmp_path / "0-ssd300_cpu-seed0", measure)
    second = bench_once("../reuse", key, tmp_path / "1-ssd300_cpu-seed1", measure)
    assert first == {"fps_b1": 10.0, "bench_reused_from": ""}
    assert second == {"fps_b1": 10.0, "bench_reused_from": str(tmp_path / "0-ssd300_cpu-seed0")}
    assert len(calls) == 1 and (tmp_path / "reuse" / f"{key}.json").is_file()
    other = reuse_key("ssd300_cpu", {"width": 0.25}, 5, "cpu", {"batch_sizes": [1, 8]})
    assert other != key and bench_once(tmp_path / "reuse", other, tmp_path / "2", measure)["fps_b1"] == 20.0
    assert bench_once(None, key, tmp_path / "3", measure) == {"fps_b1": 30.0}   # no folder: always measured


def test_a_torn_file_is_measured_again(tmp_path):
    (tmp_path / "k.json").write_text("{not json")
    result = bench_once(tmp_path, "k", tmp_path / "run", lambda: {"fps_b1": 1.0})
    assert result["bench_reused_from"] == ""
    assert json.loads((tmp_path / "k.json").read_text())["metrics"] == {"fps_b1": 1.0}


def test_a_second_seed_of_a_sweep_reuses_the_bench_through_run(compose_config, tmp_path):
    from experiments.run import run
    from tests.conftest import TINY_RUN

    overrides = ["detector=yolov1_cpu", *TINY_RUN, "stages=[bench]", "bench_reuse=../bench_reuse"]
    first = run(compose_config([*overrides, "seed=0"]), tmp_path / "0-yolov1_cpu-seed0")
    second = run(compose_config([*overrides, "seed=1"]), tmp_path / "1-yolov1_cpu-seed1")
    assert first["status"] == second["status"] == "ok", (first.get("error"), second.get("error"))
    assert first["bench_reused_from"] == "" and second["bench_reused_from"] == str(tmp_path / "0-yolov1_cpu-seed0")
    assert second["fps_b1"] == first["fps_b1"]
    assert len(list((tmp_path / "bench_reuse").glob("yolov1_cpu-*.json"))) == 1
