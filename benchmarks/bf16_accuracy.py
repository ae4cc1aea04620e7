"""The accuracy cost of bf16 autocast: one run's weights scored in fp32 and in bf16 on the same
validation images, with the image-bootstrap interval of each and the paired difference.

    python benchmarks/bf16_accuracy.py RUN_DIR [RUN_DIR ...] [--images 0] [--out FILE]

RUN_DIR is a finished run folder (``.hydra/config.yaml`` and ``checkpoints/last.pt``), e.g. each
job of ``experiment=compare``. The network runs under ``torch.autocast(<device>, torch.bfloat16)``
for the bf16 pass; pre- and post-processing are the detector's own either way.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from experiments.build import build_detector, load_run_weights  # noqa: E402
from experiments.evaluation import evaluate  # noqa: E402
from experiments.evaluation.bootstrap import paired_bootstrap  # noqa: E402
from experiments.evaluation.scoring import predict  # noqa: E402

SHOWN = ("map", "map_50", "map_small", "map_large")


def score(model, dataset, images: int, bf16: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        detections, targets, sizes = predict(model, dataset, 8, torch.device("cpu"), images)
    return evaluate(detections, targets, dataset.class_names, sizes, dataset.label_to_category_id)


def compare_run(run_dir: Path, images: int, replicates: int) -> list[str]:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    dataset = instantiate(cfg.dataset.val)
    model = build_detector(cfg.detector.model, dataset.num_classes).eval()
    load_run_weights(model, run_dir / "checkpoints" / "last.pt")
    fp32, bf16 = score(model, dataset, images, False), score(model, dataset, images, True)
    category_ids = [c for c, _ in fp32.categories]
    a, b, delta = paired_bootstrap(fp32.ground_truth, fp32.detections, bf16.detections, category_ids,
                                   replicates=replicates, seed=0)
    lines = [f"{cfg.detector.name} ({run_dir}), {len(fp32.ground_truth.image_ids)} images, "
             f"{len(fp32.detections.scores)} fp32 / {len(bf16.detections.scores)} bf16 detections"]
    for name in SHOWN:
        d, lo, hi = (100 * delta[f"delta_{name}{k}"] for k in ("", "_ci_low", "_ci_high"))
        lines.append(f"  {name:<10} fp32 {100 * a.point[name]:5.1f} [{100 * a.low[name]:.1f}, "
                     f"{100 * a.high[name]:.1f}]  bf16 {100 * b.point[name]:5.1f} [{100 * b.low[name]:.1f}, "
                     f"{100 * b.high[name]:.1f}]  bf16 - fp32 {d:+.2f} [{lo:+.2f}, {hi:+.2f}], "
                     f"p {delta['p_' + name]:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [f"bf16 autocast vs fp32 on CPU ({torch.get_num_threads()} threads), torch {torch.__version__}; "
             "AP in points, 95% image-bootstrap intervals, paired over the same resampled images"]
    for run_dir in args.runs:
        lines += compare_run(run_dir, args.images, args.replicates)
        print("\n".join(lines[-5:]), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
