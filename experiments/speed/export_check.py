"""Is the exported network the same network? Raw outputs on a fixed batch, then AP on the test images.

Raw outputs: each graph is fed the inputs PyTorch's own forward gives it (Faster / Fast R-CNN's
box head gets PyTorch's pooled RoIs, so a proposal that NMS keeps or drops by a hair cannot hide or
fake a difference; R-CNN's CNN every region batch, outputs concatenated) and each output is
compared with PyTorch's: ``max_abs`` the largest absolute difference, ``scale`` the output's
largest magnitude, ``relative`` = max_abs / scale. An fp32 export passes at ``relative`` <= 1e-4.

AP: the exported detector (``RuntimeDetector``) and the PyTorch one score the same images with
the project's evaluator; ``delta_<metric>`` = exported - PyTorch with its paired image-bootstrap
interval (``experiments.evaluation.bootstrap.paired_bootstrap``: both on the same resampled
images). Passes at |delta_map| <= 0.1 AP points (0.001 in the evaluator's 0-1 units).
"""
from __future__ import annotations

import torch

from detectors.base import Batch, Detector
from experiments.evaluation import evaluate
from experiments.evaluation.bootstrap import paired_bootstrap
from experiments.evaluation.scoring import predict
from experiments.speed.export import in_parts, part_calls, part_output_names
from experiments.speed.runtimes import ExportedNetwork, RuntimeDetector

RAW_TOLERANCE = 1e-4        # max |exported - PyTorch| / max |PyTorch|, per output, fp32
AP_TOLERANCE_POINTS = 0.1   # |delta AP| in AP points (0-100)


class ExportMismatch(ValueError):
    """An export whose raw outputs or AP differ from PyTorch's beyond tolerance."""


def _compare(reference: list[torch.Tensor], exported: list[torch.Tensor], names: list[str]) -> dict[str, dict]:
    out = {}
    for name, ref, got in zip(names, reference, exported):
        if tuple(ref.shape) != tuple(got.shape):
            raise ExportMismatch(f"output {name}: PyTorch gives {list(ref.shape)}, the export {list(got.shape)}")
        diff = float((ref.float() - got.float()).abs().max()) if ref.numel() else 0.0
        scale = float(ref.float().abs().max()) if ref.numel() else 0.0
        out[name] = {"max_abs": diff, "scale": scale, "relative": diff / scale if scale > 0 else diff}
    return out


@torch.no_grad()
def raw_differences(detector: Detector, network: ExportedNetwork, batch: Batch) -> dict[str, dict]:
    """Per graph output "<graph>.<output>": {max_abs, scale, relative} on ``batch``."""
    detector.eval()
    b = int(batch.images.shape[0])
    if not in_parts(detector):
        reference = detector.network(batch)
        reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
        exported = network.run("network", [batch.images], b)
        return _compare(reference, exported, [f"network.{i}" for i in range(len(reference))])
    out = {}
    for name, calls in part_calls(detector, batch).items():
        if not calls:       # never called (no proposal in the batch): nothing to compare
            continue
        reference = [torch.cat(parts) for parts in zip(*(outputs for _, outputs in calls))]
        exported = [torch.cat(parts) for parts in zip(*(network.run(name, [x], b) for x, _ in calls))]
        out.update(_compare(reference, exported, [f"{name}.{n}" for n in part_output_names(name, len(reference))]))
    return out


def largest_relative(differences: dict[str, dict]) -> tuple[str, dict]:
    """The output with the largest relative difference: (name, its figures)."""
    return max(differences.items(), key=lambda item: item[1]["relative"])


def delta_ap(detector: Detector, network: ExportedNetwork, dataset, batch_size: int = 8, max_images: int = 0,
             replicates: int = 1000, seed: int = 0, backend: str = "faster_coco_eval") -> dict:
    """PyTorch's and the export's AP on ``dataset`` (the first ``max_images``; 0: all) and the
    paired bootstrap: {"pytorch_map", "exported_map", "delta_map", "delta_map_ci_low/high", ...,
    "images", "pytorch_detections", "exported_detections"}, AP in the evaluator's 0-1 units."""
    device = torch.device("cpu")
    runs = {}
    for name, model in (("pytorch", detector), ("exported", RuntimeDetector(detector, network))):
        detections, targets, sizes = predict(model, dataset, batch_size, device, max_images)
        runs[name] = evaluate(detections, targets, dataset.class_names, sizes,
                              label_to_category_id=dataset.label_to_category_id, backend=backend)
    a, b = runs["pytorch"], runs["exported"]
    category_ids = [c for c, _ in a.categories]
    _, _, deltas = paired_bootstrap(a.ground_truth, a.detections, b.detections, category_ids, replicates, seed)
    out = {"images": len(a.ground_truth.image_ids), "bootstrap_replicates": replicates, "bootstrap_seed": seed,
           "pytorch_detections": len(a.detections.scores), "exported_detections": len(b.detections.scores)}
    for metric in ("map", "map_50", "voc07_map"):
        out[f"pytorch_{metric}"], out[f"exported_{metric}"] = a.metrics[metric], b.metrics[metric]
        for key in (f"delta_{metric}", f"delta_{metric}_ci_low", f"delta_{metric}_ci_high", f"p_{metric}"):
            out[key] = deltas[key]
    return out


def verdict(differences: dict[str, dict] | None, accuracy: dict | None, raw_tolerance: float = RAW_TOLERANCE,
            ap_tolerance_points: float = AP_TOLERANCE_POINTS) -> list[str]:
    """The reasons an export fails the check (empty: it passes), each with its figures."""
    reasons = []
    name, worst = largest_relative(differences) if differences else ("", {"relative": 0.0})
    if not worst["relative"] <= raw_tolerance:
        reasons.append(f"raw output {name} differs from PyTorch's by {worst['max_abs']:.3g} (largest absolute), "
                       f"{worst['relative']:.3g} of its scale {worst['scale']:.3g}: tolerance {raw_tolerance:g}")
    if accuracy is not None and not abs(accuracy["delta_map"]) * 100 <= ap_tolerance_points:
        reasons.append(f"AP differs from PyTorch's by {accuracy['delta_map'] * 100:+.3f} points (95% interval "
                       f"[{accuracy['delta_map_ci_low'] * 100:+.3f}, {accuracy['delta_map_ci_high'] * 100:+.3f}], "
                       f"{accuracy['images']} images): tolerance {ap_tolerance_points:g}")
    return reasons
