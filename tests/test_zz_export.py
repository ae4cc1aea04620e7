"""detbench-export: SSD300, YOLO v1, Faster R-CNN, Fast R-CNN and R-CNN (CPU variants) exported to ONNX and run in
ONNX Runtime / OpenVINO give PyTorch's raw outputs (relative 1e-4, fp32) and PyTorch's AP (|delta|
<= 0.1 points, paired bootstrap); bad input names what is wrong.

Run folders are written by hand (saved config, seeded random weights as checkpoints/last.pt,
metrics.json) on the synthetic dataset, so no training is needed; ``-m slow`` adds a trained SSD.
Without the deploy extra the tests skip with the install line; under ``CI=true`` they fail.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments.build import build_detector
from experiments.data.synthetic import CLASS_NAMES
from experiments.inference.run_loader import WeightsError
from experiments.speed.export import ExportError, GraphSpec, export_graph
from experiments.speed.runtimes import INSTALL_HINT, RuntimeMissing, missing_runtimes, require

# find_spec, not an import: once openvino is imported, a later in-process Hydra run under capsys
# crashes the pytest process ("lost sys.stderr"); so nothing imports it at collection, and this
# file is named to run after every other test file
MISSING = [p for p in ("onnxruntime", "openvino", "onnx", "onnxscript") if importlib.util.find_spec(p) is None]
if MISSING and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI=true: {MISSING} not installed; the README's test command installs .[dev,deploy]")
needs_deploy = pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed: {INSTALL_HINT}")

DETECTORS = ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu", "fast_rcnn_vgg16_cpu", "rcnn_vgg16_cpu"]
#: the proposal ladder's detectors kept tiny: 1/16 width, 160 px inputs (R-CNN: 32 px regions), 30 proposals
LADDER = {"fast_rcnn_vgg16_cpu": ["detector.model.min_size=160", "detector.model.max_size=160",
                                  "detector.model.input_size=[160,160]"],
          "rcnn_vgg16_cpu": ["detector.model.warp_size=32", "detector.model.context=4",
                             "detector.model.region_batch=16", "detector.model.input_size=[160,160]"]}
GRAPHS = {"fast_rcnn_vgg16_cpu": {"features", "box_head"}, "faster_rcnn_vgg16_cpu": {"features", "box_head"},
          "rcnn_vgg16_cpu": {"region_cnn"}}


def ladder_overrides(detector: str, cache: Path) -> list[str]:
    """Tiny settings of R-CNN / Fast R-CNN, their selective-search cache in ``cache`` (none for others)."""
    if detector not in LADDER:
        return []
    return [*LADDER[detector], "detector.model.width=0.0625", "detector.model.candidates_before_nms=30",
            "detector.proposals.max_proposals=30", f"+detector.proposals.cache_dir={cache}"]
DATASET = ["dataset=synthetic", "dataset.val.num_images=6", "dataset.train.num_images=6", "dataset.image_size=160"]
FAST = ["batch_sizes=[]", "dynamic_batch=true", "check_batch=2", "bootstrap=200", "eval_batch_size=3"]


def make_run(folder: Path, detector: str, compose_config, overrides=()) -> Path:
    """A run folder: the composed config as Hydra saves it, seeded random weights, status ok."""
    cfg = compose_config([f"detector={detector}", *DATASET, *overrides])
    torch.manual_seed(0)
    model = build_detector(cfg.detector.model, num_classes=len(CLASS_NAMES))
    if detector.startswith("yolo"):   # its output layer starts at confidence 0: no box would clear the threshold
        torch.nn.init.normal_(model.head[-1].weight, std=0.05)
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    OmegaConf.save(cfg, folder / ".hydra/config.yaml")
    torch.save({"model": model.state_dict()}, folder / "checkpoints/last.pt")
    (folder / "metrics.json").write_text(json.dumps({"status": "ok"}))
    return folder


def export_with(compose_config, out: Path, *overrides: str) -> dict:
    from experiments.speed.export_cli import export

    return export(compose_config_named("export", ["format=onnx", *overrides]), out)


def compose_config_named(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("conf", version_base="1.3"):
            return compose(name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


@needs_deploy
@pytest.mark.parametrize("detector", DETECTORS)
def test_export_matches_pytorch_raw_outputs_and_ap(detector, compose_config, tmp_path, two_threads):
    run = make_run(tmp_path / "run", detector, compose_config, ladder_overrides(detector, tmp_path / "proposals"))
    result = export_with(compose_config, tmp_path / "out", f"weights={run}", *FAST)
    assert result["status"] == "ok", result["mismatch"]
    graphs = {r["graph"] for r in result["files"]}
    assert graphs == GRAPHS.get(detector, {"network"})
    assert all((tmp_path / "out" / r["file"]).is_file() and r["opset"] == 18 for r in result["files"])
    largest = result["raw_check"]["largest"]["batch dynamic"]
    assert largest["relative"] <= 1e-4 and largest["scale"] > 0, largest
    accuracy = result["accuracy"]
    assert accuracy["images"] == 6 and abs(accuracy["delta_map"]) * 100 <= 0.1
    assert accuracy["exported_detections"] == accuracy["pytorch_detections"] > 0
    assert accuracy["delta_map_ci_low"] <= accuracy["delta_map"] <= accuracy["delta_map_ci_high"]
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved["input_size"] == list(result["input_size"]) and saved["stays_in_pytorch"]
    if "rcnn" in detector:
        assert any("NMS" in step for step in saved["stays_in_pytorch"])
    if detector in LADDER:   # the proposals stay in PyTorch, and the image batch reached the RoI / region graph
        assert any(step.startswith("proposals (") for step in saved["stays_in_pytorch"])
        per_output = result["raw_check"]["per_output"]["batch dynamic"]
        assert {name.split(".")[0] for name in per_output} == GRAPHS[detector]
        assert all(f["scale"] > 0 and f["relative"] <= 1e-4 for f in per_output.values()), per_output


@needs_deploy
def test_openvino_fixed_batch_and_mismatch_refused(compose_config, tmp_path, two_threads):
    """The fixed-batch graph in OpenVINO (IR in fp32) passes; a tolerance of 0 refuses it, naming the
    largest difference, and allow_mismatch keeps it marked."""
    from experiments.speed.export_check import ExportMismatch

    run = make_run(tmp_path / "run", "yolov1_cpu", compose_config)
    common = [f"weights={run}", "format=openvino", "batch_sizes=[2]", "dynamic_batch=false", "check_accuracy=false",
              "exporter=torchscript"]
    result = export_with(compose_config, tmp_path / "ok", *common)
    assert result["status"] == "ok" and result["runtime"] == "openvino"
    assert [r["batch"] for r in result["files"]] == [2]
    assert (tmp_path / "ok" / result["files"][0]["openvino_file"]).is_file()
    assert result["raw_check"]["largest"]["batch 2"]["relative"] <= 1e-4
    with pytest.raises(ExportMismatch, match=r"refused: batch 2: raw output network\.0 differs .* tolerance 1e-30"):
        export_with(compose_config, tmp_path / "refused", *common, "raw_tolerance=1e-30")
    assert json.loads((tmp_path / "refused" / "export.json").read_text())["status"] == "refused"
    marked = export_with(compose_config, tmp_path / "marked", *common, "raw_tolerance=1e-30", "allow_mismatch=true")
    assert marked["status"].startswith("marked") and marked["mismatch"]


@needs_deploy
def test_bad_input_names_the_problem(compose_config, tmp_path):
    run = make_run(tmp_path / "run", "yolov1_cpu", compose_config)
    (run / "checkpoints/last.pt").unlink()
    with pytest.raises(WeightsError, match="has no checkpoints/last.pt"):
        export_with(compose_config, tmp_path / "out", f"weights={run}")
    with pytest.raises(ValueError, match=r"format=tflite: unknown export format; choose from \['onnx', 'openvino'\]"):
        export_with(compose_config, tmp_path / "out", f"weights={run}", "format=tflite")
    with pytest.raises(ValueError, match="unknown runtime 'tflite'"):
        require("tflite")


def test_missing_runtime_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("importlib.import_module", lambda name: no_openvino(name))
    with pytest.raises(RuntimeMissing, match=r"runtime 'openvino' is not installed .*pip install -e \"\.\[deploy\]\""):
        require("openvino")
    assert missing_runtimes(["pytorch", "openvino"]) == ["openvino"]


class Unexportable(torch.nn.Module):
    """A layer neither exporter can trace (its forward leaves torch for Python numbers)."""

    def forward(self, x):
        raise NotImplementedError("this layer calls a C extension no exporter traces")


class DynamoOnlyFailure(torch.nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            raise NotImplementedError("unsupported under torch.export")
        return x * 2


@needs_deploy
def test_export_failure_names_the_layer_and_the_workaround(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Unexportable())
    spec = GraphSpec("network", model, (torch.rand(1, 3, 8, 8),), ["images"], ["raw"])
    with pytest.raises(ExportError, match=r"dynamo exporter failed at layer 1 \(Unexportable\).*torchscript exporter "
                                          r"failed at layer 1 \(Unexportable\): NotImplementedError: this layer"):
        export_graph(spec, tmp_path / "bad.onnx")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), DynamoOnlyFailure())
    record = export_graph(GraphSpec("network", model, (torch.rand(1, 3, 8, 8),), ["images"], ["raw"]),
                          tmp_path / "ok.onnx")
    assert record["exporter"] == "torchscript"
    assert record["workaround"].startswith("dynamo exporter failed at layer 1 (DynamoOnlyFailure)")
    assert record["workaround"].endswith("exported with the torchscript exporter instead")


@needs_deploy
def test_tiny_run_has_runtime_rows_in_its_speed_table(compose_config, tmp_path, two_threads):
    """bench.runtimes: the run's metrics hold each runtime's rows (same images, batch, warm-up and
    split), and the report's speed table shows them in its runtime column."""
    from analysis.runs import load_runs
    from analysis.summary import speed_table
    from experiments.run import run
    from tests.conftest import TINY_RUN

    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "stages=[bench]", "bench.measure_peak=false",
                          "bench.runtimes=[pytorch,onnxruntime,openvino]"])
    metrics = run(cfg, tmp_path / "runs" / "0")
    assert metrics["status"] == "ok", metrics.get("error")
    for runtime in ("onnxruntime", "openvino"):
        for key in ("fps_b1", "latency_ms_p50_b1", "latency_ms_p95_b1", "network_ms_b1", "postprocess_ms_b1"):
            assert metrics[f"{runtime}_{key}"] > 0, (runtime, key)
        assert metrics[f"{runtime}_threads"] == metrics["bench_threads"] == 2
        assert metrics[f"{runtime}_raw_relative"] <= 1e-4
        assert metrics[f"{runtime}_boxes_kept_b1"] == metrics["boxes_kept_b1"]
    assert "f32 precision" in metrics["openvino_settings"]
    assert metrics["bench_runtimes"] == "pytorch,onnxruntime,openvino"
    runs = load_runs(tmp_path / "runs")
    speed = speed_table(runs.assign(group=runs["detector"]))
    assert sorted(speed.data["runtime"]) == ["onnxruntime", "openvino", "pytorch"]
    assert (speed.data["fps_b1_mean"] > 0).all() and list(speed.shown.columns[:2]) == ["detector", "runtime"]


def test_unknown_runtime_in_bench_runtimes_is_named():
    from experiments.speed.runtime_rows import check_runtimes

    with pytest.raises(ValueError, match=r"bench.runtimes: \['tflite'\] not among"):
        check_runtimes(["pytorch", "tflite"])


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason=INSTALL_HINT)
def test_tensorrt_without_its_provider_says_why(monkeypatch, tmp_path):
    """tensorrt runs through ONNX Runtime's TensorrtExecutionProvider: without it (a CPU build) the
    runtime is missing with the reason, and a CPU bench names its device and the GPU suite."""
    import onnxruntime

    from experiments.speed.runtime_rows import benchmark_runtimes

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeMissing, match=r"needs ONNX Runtime's TensorrtExecutionProvider .*CPUExecutionProvider"):
        require("tensorrt")
    assert missing_runtimes(["pytorch", "onnxruntime", "tensorrt"]) == ["tensorrt"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider"])
    metrics = benchmark_runtimes(torch.nn.Identity(), ["tensorrt"], tmp_path, batch_sizes=[1], image_size=(8, 8))
    assert metrics["tensorrt_skipped"].startswith("runs on cuda only (bench device cpu)")


@needs_deploy
@pytest.mark.slow
def test_trained_ssd_keeps_its_ap_after_export(compose_config, tmp_path, two_threads):
    """A trained SSD300 (AP > 0): the export's AP on the run's validation images equals PyTorch's."""
    from experiments.run import run

    cfg = compose_config(["detector=ssd300_cpu", "detector.model.width=0.0625", *DATASET, "device=cpu",
                          "dataset.train.num_images=16", "train.epochs=6", "train.batch_size=4",
                          "train.augmentation=none", "train.log_every=100", "stages=[train,eval]", "eval.bootstrap=0"])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["status"] == "ok", metrics.get("error")
    (tmp_path / "run" / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra/config.yaml")
    result = export_with(compose_config, tmp_path / "out", f"weights={tmp_path / 'run'}", *FAST)
    accuracy = result["accuracy"]
    assert accuracy["pytorch_map"] == pytest.approx(metrics["map"], abs=1e-9) and metrics["map"] > 0
    assert result["status"] == "ok" and abs(accuracy["delta_map"]) * 100 <= 0.1
