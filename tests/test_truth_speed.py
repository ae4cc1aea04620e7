"""Issue 28, speed on a busy machine: every timing sits between two readings of the machine (a
reference kernel against the committed quiet value for this CPU, the load against the cores);
disturbed -> measured again, still disturbed -> kept but marked and left out of speed claims."""
from __future__ import annotations

import pandas as pd

from analysis.significance import latency_samples
from experiments.speed import busy_guard
from experiments.speed.busy_guard import Reading, guarded, read_machine

QUIET = Reading(2.0, 1.0, 0.5, 2, False, "")
BUSY = Reading(30.0, 15.0, 4.0, 2, True, "load average 4.0 > 1 + 1.0 x 2 cores")


def _reads(*readings):
    queue = list(readings)
    return lambda: queue.pop(0)


def test_a_disturbed_timing_is_measured_again_then_marked():
    calls = []
    again = guarded(lambda: calls.append(1) or {"fps_b1": 50.0}, "bench",
                    read=_reads(BUSY, QUIET, QUIET, QUIET))
    assert len(calls) == 2 and again["speed_reliable"] is True and "speed_note" not in again
    calls.clear()
    marked = guarded(lambda: calls.append(1) or {"fps_b1": 0.7}, "bench",
                    read=_reads(QUIET, BUSY, BUSY, QUIET))
    assert len(calls) == 2 and marked["speed_reliable"] is False and marked["fps_b1"] == 0.7
    assert "busy machine" in marked["speed_note"] and "stages=[bench]" in marked["speed_note"]


def test_readings_judge_the_kernel_against_the_committed_reference_and_the_load(monkeypatch):
    monkeypatch.setattr(busy_guard.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    slow = read_machine({"kernel_ms": 1e-6, "tolerance": 1.5, "load_per_core": 1.0})   # no machine is this fast
    assert slow.disturbed and "slower than on the quiet machine" in slow.why
    assert not read_machine({"kernel_ms": 1e6, "tolerance": 1.5, "load_per_core": 1.0}).disturbed
    monkeypatch.setattr(busy_guard.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    loaded = read_machine({"kernel_ms": 1e6, "tolerance": 1.5, "load_per_core": 1.0})
    assert loaded.disturbed and "load average 9.0" in loaded.why


def test_a_busy_timing_is_in_no_speed_claim():
    runs = pd.DataFrame([
        {"dataset": "d", "group": "ssd", "status": "ok", "speed_reliable": True, "latency_ms_samples_b1": "17 18"},
        {"dataset": "d", "group": "ssd", "status": "ok", "speed_reliable": False, "latency_ms_samples_b1": "1350"},
    ])
    assert latency_samples(runs)[("d", "ssd")].tolist() == [17.0, 18.0]
