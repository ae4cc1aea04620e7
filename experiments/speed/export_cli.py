"""``detbench-export``: a trained run's network as ONNX / OpenVINO IR, checked against PyTorch (``conf/export.yaml``).

``export(cfg, output_dir)`` is a plain function the tests call; ``main`` is a thin
``@hydra.main`` around it that exits with a one-line message on bad input. Steps: load the run
(``experiments.inference.run_loader``), export every graph (``experiments.speed.export``), load
each file in the format's runtime, compare raw outputs with PyTorch's on a fixed batch of the run's
validation images (every exported batch variant), score the validation images with both
(``experiments.speed.export_check``), write ``export.json``; an export beyond tolerance is refused
(``ExportMismatch``, its figures in the message and in export.json) unless ``allow_mismatch``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.data.split_builder import build_split
from experiments.inference.run_loader import SAVED_CONFIG, WeightsError, load_detector
from experiments.speed.export import FORMATS, export_network, pytorch_steps
from experiments.speed.export_check import ExportMismatch, delta_ap, raw_differences, verdict
from experiments.speed.runtimes import (
    FORMAT_RUNTIME,
    INSTALL_HINT,
    ExportedNetwork,
    RuntimeMissing,
    require,
    runtime_settings,
    threads_default,
)
from experiments.studies import proposal_stage

log = logging.getLogger("detbench")


def require_exporter(exporter: str) -> None:
    """torch's ONNX exporters need ``onnx`` (and ``onnxscript`` for dynamo): RuntimeMissing otherwise."""
    for package in ("onnx", "onnxscript") if exporter == "dynamo" else ("onnx",):
        try:
            __import__(package)
        except ImportError:
            raise RuntimeMissing(f"the {exporter} ONNX exporter needs '{package}', not installed: {INSTALL_HINT}") \
                from None


def check_images(dataset, count: int) -> list[torch.Tensor]:
    """The first ``count`` validation images, cycled when the split has fewer."""
    images = [dataset[i][0] for i in range(min(count, len(dataset)))]
    return [images[i % len(images)] for i in range(count)]


def variants(records: list[dict]) -> dict[str, list[dict]]:
    """Batch variant ("1", "8", "dynamic") -> the records that run it (a graph with a dynamic RoI or
    region axis, "dynamic rois" / "dynamic regions", belongs to every variant; R-CNN's one graph is
    the "dynamic" variant alone)."""
    shared = [r for r in records if str(r["batch"]).startswith("dynamic ")]
    keys = sorted({str(r["batch"]) for r in records if r not in shared})
    return {k: [r for r in records if str(r["batch"]) == k] + shared for k in keys} or {"dynamic": shared}


def export(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run detbench-export with ``cfg`` (conf/export.yaml's keys); returns export.json's dict."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: unknown export format; choose from {list(FORMATS)}")
    runtime = FORMAT_RUNTIME[fmt]
    require_exporter(str(cfg.exporter))
    require(runtime)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    threads = threads_default()
    loaded = load_detector(str(cfg.weights), "cpu")
    detector = loaded.model.eval()
    run_cfg = OmegaConf.load(loaded.run_dir / SAVED_CONFIG)
    proposal_stage.attach(detector, run_cfg)    # R-CNN, Fast R-CNN: the run's selective search, its cache
    try:
        dataset = build_split(run_cfg.dataset, "val")
    except Exception as error:  # the run's data may not be on this machine
        raise ValueError(f"the validation split of {loaded.run_dir} cannot be rebuilt for the check "
                         f"({type(error).__name__}: {error})") from error

    records = export_network(detector, out, loaded.name, list(cfg.batch_sizes), bool(cfg.dynamic_batch),
                             int(cfg.opset), str(cfg.exporter), fmt)
    differences = {}
    with torch.no_grad():
        for key, subset in variants(records).items():
            size = int(cfg.check_batch) if key == "dynamic" else int(key)
            batch = detector.preprocess(check_images(dataset, size))
            network = ExportedNetwork(detector, subset, out, runtime, threads)
            differences[f"batch {key}"] = raw_differences(detector, network, batch)
    worst = {variant: max(d.items(), key=lambda i: i[1]["relative"]) for variant, d in differences.items()}
    accuracy = None
    if cfg.check_accuracy:
        network = ExportedNetwork(detector, records, out, runtime, threads)
        accuracy = delta_ap(detector, network, dataset, int(cfg.eval_batch_size), int(cfg.max_images),
                            int(cfg.bootstrap), int(cfg.bootstrap_seed))
    reasons = [f"{variant}: {reason}" for variant, diff in differences.items()
               for reason in verdict(diff, None, float(cfg.raw_tolerance))]
    reasons += verdict(None, accuracy, ap_tolerance_points=float(cfg.ap_tolerance))
    result = {
        "detector": loaded.name, "run": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint), "format": fmt,
        "runtime": runtime, "runtime_settings": runtime_settings(runtime, threads), "torch": torch.__version__,
        "input_size": list(detector.input_size), "opset": int(cfg.opset), "files": records,
        "stays_in_pytorch": pytorch_steps(detector),
        "raw_check": {"images": "the first validation images", "tolerance_relative": float(cfg.raw_tolerance),
                      "largest": {v: {"output": n, **f} for v, (n, f) in worst.items()},
                      "per_output": differences},
        "accuracy": accuracy, "ap_tolerance_points": float(cfg.ap_tolerance),
        "mismatch": reasons, "status": "refused" if reasons and not cfg.allow_mismatch else
        ("marked: beyond tolerance (allow_mismatch)" if reasons else "ok"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if reasons and not cfg.allow_mismatch:
        raise ExportMismatch(f"export of {loaded.name} to {fmt} refused: " + "; ".join(reasons)
                             + " (allow_mismatch=true keeps it, marked)")
    for reason in reasons:
        log.warning("export of %s beyond tolerance (kept, allow_mismatch): %s", loaded.name, reason)
    if accuracy:
        log.info("%s in %s: AP %.2f%% vs PyTorch %.2f%%, delta %+.3f points [%+.3f, %+.3f]", loaded.name, runtime,
                 100 * accuracy["exported_map"], 100 * accuracy["pytorch_map"], accuracy["delta_map"] * 100,
                 accuracy["delta_map_ci_low"] * 100, accuracy["delta_map_ci_high"] * 100)
    return result


@hydra.main(config_path="../../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        export(cfg)
    except (ValueError, FileNotFoundError, RuntimeError, WeightsError) as error:
        sys.exit(f"detbench-export: error: {error}")


if __name__ == "__main__":
    main()
