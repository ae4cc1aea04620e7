"""The one place where detbench's paper settings are compared with the papers: for every
``conf/experiment/paper_*.yaml``, each setting the paper states (as ``analysis/papers.csv``
cites them), the value detbench's composed config holds, and whether they match. What does
not match is declared here, never silently.

The table is generated from the YAML files (a small composer that follows Hydra's defaults
lists, so that it also works inside a running Hydra job; no model code is imported) and
printed into README.md between the ``fidelity`` markers; the report reprints it, and a test
checks that README and configs agree:

    python -m analysis.fidelity            # print the table
    python -m analysis.fidelity --write    # rewrite README.md's table from the configs
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.table import Table

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
README = ROOT / "README.md"
BEGIN, END = "<!-- fidelity:begin (python -m analysis.fidelity --write) -->", "<!-- fidelity:end -->"
VOC0712_TRAIN = 16551          # VOC2007 trainval + VOC2012 trainval images
COCO_TRAIN = 118287            # train2017 (the paper's trainval35k holds about as many)
VOC07_TRAIN = 5011             # VOC2007 trainval images


def _load(group: str, name: str) -> DictConfig:
    """conf/<group>/<name>.yaml merged over its own defaults list (same group, ``_self_`` last)."""
    cfg = OmegaConf.load(CONF / group / f"{name}.yaml")
    defaults = cfg.pop("defaults", [])
    merged = OmegaConf.create()
    for entry in defaults:
        if entry != "_self_" and isinstance(entry, str):
            merged = OmegaConf.merge(merged, _load(group, entry))
    return OmegaConf.merge(merged, cfg)


def compose_experiment(name: str) -> DictConfig:
    """What ``detbench experiment=<name>`` composes for detector, dataset and train."""
    primary = OmegaConf.load(CONF / "config.yaml")
    choice = {e_key: e_val for e in primary.defaults if isinstance(e, DictConfig)
              for e_key, e_val in e.items()}
    experiment = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    for entry in experiment.get("defaults", []):
        if isinstance(entry, DictConfig):
            for key, value in entry.items():
                choice[key.replace("override /", "").strip()] = value
    body = {k: v for k, v in experiment.items() if k != "defaults"}
    groups = {g: _load(g, choice[g]) for g in ("detector", "dataset", "train")}
    return OmegaConf.merge(OmegaConf.create(groups), OmegaConf.create(body))


def _get(cfg: DictConfig, *keys: str):
    """The first of ``keys`` the config holds (option names change; every spelling is tried)."""
    for key in keys:
        value = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False)
        if value != "<absent>":
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return None


def _policy(cfg):
    return _get(cfg, "train.augmentation") or _get(cfg, "detector.augmentation")


def _iterations(cfg, images: int):
    return int(cfg.train.epochs) * (images // int(cfg.train.batch_size))


def _weights(cfg):
    value = _get(cfg, "detector.model.backbone_weights", "detector.model.weights",
                 "detector.model.backbone_weights_path", "detector.model.weights_path")
    return value if value is not None else "none (from scratch)"


@dataclass(frozen=True)
class Setting:
    """One paper setting: the experiments it applies to (name prefixes), what the paper says,
    how to read detbench's value from the composed config, and when they match."""
    prefixes: tuple[str, ...]
    setting: str
    paper: str
    ours: Callable[[DictConfig], object]
    matches: Callable[[DictConfig], bool]
    note: str = ""


SSD, YOLO, FRCNN = ("paper_voc_ssd", "paper_coco_ssd"), ("paper_voc_yolov1", "paper_voc_fast_yolo"), \
    ("paper_voc_faster_rcnn",)
FAST, RCNN = ("paper_voc_fast_rcnn",), ("paper_voc_rcnn",)


def _proposals(c) -> str:
    k = _get(c, "detector.proposals.base_k")
    return (f"selective search {_get(c, 'detector.proposals.mode')} (k {k}, {k + _get(c, 'detector.proposals.inc_k')}),"
            f" {_get(c, 'detector.model.candidates_before_nms')} at test")
SETTINGS = [
    Setting(SSD, "backbone weights", "VGG-16 ImageNet, fc6/fc7 subsampled from its classifier",
            _weights, lambda c: _weights(c) == "IMAGENET1K_V1",
            "without the classifier (IMAGENET1K_FEATURES) fc6/fc7 start random"),
    Setting(SSD, "augmentation", "photometric, expansion, IoU crop or random patch, flip",
            _policy, lambda c: _policy(c) == "ssd"),
    Setting(SSD, "crop patch side", "[0.1, 1] of the image (Caffe code: 0.3)", lambda c: "[0.3, 1]",
            lambda c: False, "torchvision's RandomIoUCrop and the Caffe code use 0.3"),
    Setting(SSD, "difficult objects", "trained on (Caffe: use_difficult_gt)",
            lambda c: "trained on" if _get(c, "detector.learn_difficult") else "left out",
            lambda c: _get(c, "detector.learn_difficult") is True),
    Setting(SSD, "batch, lr, momentum, decay", "32, 1e-3, 0.9, 5e-4",
            lambda c: f"{c.train.batch_size}, {c.train.optimizer.lr:g}, {c.train.optimizer.momentum:g}, "
                      f"{c.train.optimizer.weight_decay:g}",
            lambda c: (c.train.batch_size, c.train.optimizer.lr, c.train.optimizer.momentum,
                       c.train.optimizer.weight_decay) == (32, 1e-3, 0.9, 5e-4)),
    Setting(("paper_voc_ssd",), "iterations (lr drops)", "120k (80k, 100k), SSD* with expansion",
            lambda c: f"{_iterations(c, VOC0712_TRAIN)} ({', '.join(map(str, c.train.scheduler.milestones))})",
            lambda c: _iterations(c, VOC0712_TRAIN) == 120000
            and list(c.train.scheduler.milestones) == [80000, 100000],
            f"{VOC0712_TRAIN} // 32 = 517 iterations per epoch: epochs cannot land on 120k exactly"),
    Setting(("paper_coco_ssd",), "iterations (lr drops)", "240k (160k, 200k)",
            lambda c: f"{_iterations(c, COCO_TRAIN)} ({', '.join(map(str, c.train.scheduler.milestones))})",
            lambda c: _iterations(c, COCO_TRAIN) == 240000,
            "train2017 stands in for trainval35k; whole epochs of it"),
    Setting(YOLO, "backbone weights", "first 20 conv layers ImageNet-pretrained at 224",
            _weights, lambda c: _weights(c) != "none (from scratch)",
            "no ImageNet darknet weights are shipped: give detector.model.backbone_weights=FILE"),
    Setting(YOLO, "augmentation", "scale and translate 20%, exposure and saturation 1.5x",
            _policy, lambda c: _policy(c) == "yolo", "plus a horizontal flip (darknet's code)"),
    Setting(YOLO, "difficult objects", "left out (darknet's voc_label.py)",
            lambda c: "trained on" if _get(c, "detector.learn_difficult") else "left out",
            lambda c: _get(c, "detector.learn_difficult") is False),
    Setting(YOLO, "epochs, batch, warm-up", f"135, 64, 1 epoch ({VOC0712_TRAIN // 64} iterations)",
            lambda c: f"{c.train.epochs}, {c.train.batch_size}, {c.train.warmup_iterations} iterations",
            lambda c: (c.train.epochs, c.train.batch_size, c.train.warmup_iterations)
            == (135, 64, VOC0712_TRAIN // 64)),
    Setting(YOLO, "lr drops (iterations after warm-up)", "after 75 and 105 epochs",
            lambda c: ", ".join(map(str, c.train.scheduler.milestones)),
            lambda c: list(c.train.scheduler.milestones) == [75 * (VOC0712_TRAIN // 64),
                                                             105 * (VOC0712_TRAIN // 64)]),
    Setting(YOLO, "head, dropout", "fully connected, 0.5",
            lambda c: f"{_get(c, 'detector.model.head')}, {_get(c, 'detector.model.dropout')}",
            lambda c: (_get(c, "detector.model.head"), _get(c, "detector.model.dropout")) == ("fc", 0.5)),
    Setting(FRCNN, "backbone weights", "VGG-16 ImageNet incl. fc6/fc7; conv1-2 frozen",
            lambda c: f"{_weights(c)}, frozen_blocks {_get(c, 'detector.model.frozen_blocks')}",
            lambda c: _weights(c) == "IMAGENET1K_V1" and _get(c, "detector.model.frozen_blocks") == 2,
            "fc6/fc7 then start random and conv1-2 train"),
    Setting(FRCNN, "augmentation", "horizontal flip only", _policy, lambda c: _policy(c) == "flip"),
    Setting(FRCNN, "training input", "shorter side 600, longer at most 1000, aspect kept",
            lambda c: f"{_get(c, 'detector.model.min_size')} / {_get(c, 'detector.model.max_size')}",
            lambda c: (_get(c, "detector.model.min_size"), _get(c, "detector.model.max_size")) == (600, 1000)),
    Setting(FRCNN, "difficult objects", "left out (py-faster-rcnn use_diff: False)",
            lambda c: "trained on" if _get(c, "detector.learn_difficult") else "left out",
            lambda c: _get(c, "detector.learn_difficult") is False),
    Setting(FRCNN, "iterations (lr drop)", "80k (60k), one image per batch",
            lambda c: f"{_iterations(c, VOC0712_TRAIN)} ({', '.join(map(str, c.train.scheduler.milestones))})",
            lambda c: _iterations(c, VOC0712_TRAIN) == 80000,
            f"whole epochs: 5 x {VOC0712_TRAIN} images"),
    Setting(FRCNN, "RoI sampling background", "IoU in [0.1, 0.5)", lambda c: "[0, 0.5)", lambda c: False,
            "torchvision's RoIHeads samples background from IoU 0"),
    Setting(FAST + RCNN, "backbone weights", "VGG-16 ImageNet incl. fc6/fc7; conv1-2 frozen",
            lambda c: f"{_weights(c)}, frozen_blocks {_get(c, 'detector.model.frozen_blocks')}",
            lambda c: _weights(c) == "IMAGENET1K_V1" and _get(c, "detector.model.frozen_blocks") == 2,
            "fc6/fc7 then start random and conv1-2 train"),
    Setting(FAST + RCNN, "augmentation", "horizontal flip only", _policy, lambda c: _policy(c) == "flip"),
    Setting(FAST + RCNN, "difficult objects", "left out (use_diff: False)",
            lambda c: "trained on" if _get(c, "detector.learn_difficult") else "left out",
            lambda c: _get(c, "detector.learn_difficult") is False),
    Setting(FAST + RCNN, "proposals", "selective search fast (k 50, 100), 2000 per image", _proposals,
            lambda c: _proposals(c) == "selective search fast (k 50, 100), 2000 at test"),
    Setting(FAST + RCNN, "fc6/fc7 dropout", "0.5 (VGG-16's classifier)", lambda c: "none", lambda c: False,
            "torchvision's TwoMLPHead, shared with Faster R-CNN, has no dropout"),
    Setting(FAST, "training input", "shorter side 600, longer at most 1000, aspect kept",
            lambda c: f"{_get(c, 'detector.model.min_size')} / {_get(c, 'detector.model.max_size')}",
            lambda c: (_get(c, "detector.model.min_size"), _get(c, "detector.model.max_size")) == (600, 1000)),
    Setting(FAST, "RoI sampling", "2 images x 64 RoIs, 25% fg at IoU >= 0.5, bg IoU [0.1, 0.5)",
            lambda c: (f"{c.train.batch_size} images x {_get(c, 'detector.model.roi_heads.batch_size_per_image')}"
                       f" RoIs, {_get(c, 'detector.model.roi_heads.positive_fraction'):.0%} fg, bg IoU "
                       f"[{_get(c, 'detector.model.roi_heads.bg_iou_low')}, "
                       f"{_get(c, 'detector.model.roi_heads.bg_iou_thresh')})"),
            lambda c: (c.train.batch_size, _get(c, "detector.model.roi_heads.batch_size_per_image"),
                       _get(c, "detector.model.roi_heads.positive_fraction"),
                       _get(c, "detector.model.roi_heads.bg_iou_low")) == (2, 64, 0.25, 0.1)),
    Setting(FAST, "RoI pooling", "max pooling 7x7 at 1/16", lambda c: _get(c, "detector.model.roi_heads.pooling"),
            lambda c: _get(c, "detector.model.roi_heads.pooling") == "pool"),
    Setting(FAST, "iterations (lr drop)", "40k (30k)",
            lambda c: f"{_iterations(c, VOC0712_TRAIN)} ({', '.join(map(str, c.train.scheduler.milestones))})",
            lambda c: _iterations(c, VOC0712_TRAIN) == 40000, f"whole epochs: 5 x {VOC0712_TRAIN} images at 2"),
    Setting(RCNN, "warp", "224 x 224 with 16 px of context (AlexNet: 227)",
            lambda c: f"{_get(c, 'detector.model.warp_size')}, context {_get(c, 'detector.model.context')}",
            lambda c: (_get(c, "detector.model.warp_size"), _get(c, "detector.model.context")) == (224, 16)),
    Setting(RCNN, "fine-tuning batch", "128 windows: 32 fg (IoU >= 0.5), 96 bg",
            lambda c: f"{_get(c, 'detector.model.fg_per_batch')} fg, {_get(c, 'detector.model.bg_per_batch')} bg",
            lambda c: (_get(c, "detector.model.fg_per_batch"), _get(c, "detector.model.bg_per_batch")) == (32, 96)),
    Setting(RCNN, "iterations (lr drops)", "100k (every 20k)",
            lambda c: f"{_iterations(c, VOC07_TRAIN)} ({', '.join(map(str, c.train.scheduler.milestones))})",
            lambda c: _iterations(c, VOC07_TRAIN) == 100000, f"whole epochs: 40 x {VOC07_TRAIN} images at 2"),
    Setting(RCNN, "SVMs", "liblinear, C 1e-3, bias x10, positives x2, negatives IoU < 0.3, hard negatives",
            lambda c: (f"torch L-BFGS on liblinear's primal, C {_get(c, 'detector.rcnn_fit.c'):g}, bias "
                       f"x{_get(c, 'detector.rcnn_fit.bias_multiplier'):g}, positives "
                       f"x{_get(c, 'detector.rcnn_fit.positive_weight'):g}, negatives IoU < "
                       f"{_get(c, 'detector.rcnn_fit.negative_iou')}"),
            lambda c: (_get(c, "detector.rcnn_fit.c"), _get(c, "detector.rcnn_fit.bias_multiplier"),
                       _get(c, "detector.rcnn_fit.positive_weight"), _get(c, "detector.rcnn_fit.negative_iou"))
            == (1e-3, 10.0, 2.0, 0.3)),
    Setting(RCNN, "box regression", "ridge on pool5, lambda 1000, proposals IoU >= 0.6",
            lambda c: (f"ridge on pool5, lambda {_get(c, 'detector.rcnn_fit.ridge_lambda'):g}, IoU >= "
                       f"{_get(c, 'detector.rcnn_fit.regression_iou')}"),
            lambda c: (_get(c, "detector.rcnn_fit.ridge_lambda"), _get(c, "detector.rcnn_fit.regression_iou"))
            == (1000.0, 0.6)),
]


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("paper_*.yaml"))


def fidelity_frame() -> pd.DataFrame:
    """experiment, setting, paper, detbench, matches ('yes' / 'no'), note."""
    rows = []
    for name in experiments():
        cfg = compose_experiment(name)
        for s in SETTINGS:
            if name.startswith(s.prefixes):
                ok = bool(s.matches(cfg))
                rows.append({"experiment": name, "setting": s.setting, "paper": s.paper,
                             "detbench": str(s.ours(cfg)), "matches": "yes" if ok else "no",
                             "note": "" if ok else s.note})
    return pd.DataFrame(rows, columns=["experiment", "setting", "paper", "detbench", "matches", "note"])


def fidelity_markdown() -> str:
    return fidelity_frame().to_markdown(index=False) + "\n"


def fidelity_table(runs: pd.DataFrame | None = None) -> Table:
    """The report's copy of the README table: one row per (paper_* experiment, setting); given
    ``runs``, only the experiments they ran (``experiment=paper_*`` in their overrides)."""
    frame = fidelity_frame()
    if runs is not None:
        ran = {o.split("=", 1)[1] for overrides in runs["overrides"].fillna("") for o in str(overrides).split()
               if o.startswith("experiment=")}
        frame = frame[frame["experiment"].isin(ran)]
    return Table("paper_fidelity", "Paper setting vs detbench (from conf/experiment/paper_*.yaml)",
                 frame, frame, "Every 'no' is a declared deviation; see README.md.")


def readme_table(text: str) -> str:
    """The part of README.md between the markers."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{README}: no '{BEGIN}' ... '{END}' block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table")
    args = parser.parse_args(argv)
    table = fidelity_markdown()
    if not args.write:
        sys.stdout.write(table)
        return
    text = README.read_text()
    readme_table(text)
    head, rest = text.split(BEGIN, 1)
    README.write_text(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")
    print(f"{README}: table rewritten ({len(table.splitlines()) - 2} rows)")


if __name__ == "__main__":
    main()
