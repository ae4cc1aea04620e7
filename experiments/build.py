"""Building a detector from its config and giving it weights: the one place that reads weight files.

Detectors read no files (``detectors/`` uses only torch and torchvision); they take state_dicts
through ``Detector.load_backbone_state`` and ``load_detector_state``. This module resolves what
a config names and hands it over:

* ``detector.model.backbone_weights``: a name of the detector's torchvision weights enum (e.g.
  ``IMAGENET1K_V1`` of ``VGG16_Weights``; fetched through torchvision's weights API, from its
  cache under ``$TORCH_HOME/hub/checkpoints`` or a download) or a path to a local state_dict file.
  With ``image_mean``/``image_std`` left null, the input normalisation follows the enum's
  metadata (IMAGENET1K_FEATURES expects [0, 255] pixels minus the mean).
* the run's ``weights=``: the one whole-detector key: a run folder (its ``checkpoints/last.pt``),
  a detbench checkpoint or a whole-detector state_dict (torchvision's published keys for the
  ``tv_*`` rows), loaded by ``load_run_weights``. ``detector.model.weights`` is refused with a
  message naming ``weights=`` (a null left in an old run's saved config is ignored).

``read_state_dict`` is the one file loader, used here, by the runner and by the checkpoint code.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from detectors.base import Detector
from experiments.job.layout import last_checkpoint

log = logging.getLogger(__name__)

#: old option names -> the shared name that replaced them (an old name is an error naming the new).
RENAMED_OPTIONS = {
    "score_threshold": "score_thresh", "nms_threshold": "nms_thresh", "top_k": "max_detections",
    "candidates_per_class": "candidates_before_nms", "box_score_thresh": "score_thresh",
    "box_nms_thresh": "nms_thresh", "box_detections_per_img": "max_detections",
    "rpn_post_nms_top_n": "candidates_before_nms (test) and rpn.post_nms_top_n_train",
    "weights_path": "backbone_weights (a file) or the run's weights= (a whole detector)",
    "backbone_weights_path": "backbone_weights (a torchvision weights name or a file)",
    "rpn_pre_nms_top_n": "rpn.pre_nms_top_n", "rpn_nms_thresh": "rpn.nms_thresh",
    "rpn_fg_iou_thresh": "rpn.fg_iou_thresh", "rpn_bg_iou_thresh": "rpn.bg_iou_thresh",
    "rpn_batch_size_per_image": "rpn.batch_size_per_image", "rpn_positive_fraction": "rpn.positive_fraction",
    "anchor_sizes": "rpn.anchor_sizes", "roi_pooling": "roi_heads.pooling",
    "box_fg_iou_thresh": "roi_heads.fg_iou_thresh", "box_bg_iou_thresh": "roi_heads.bg_iou_thresh",
    "box_batch_size_per_image": "roi_heads.batch_size_per_image",
    "box_positive_fraction": "roi_heads.positive_fraction",
}
#: the same, for Faster R-CNN's ``aspect_ratios`` only (SSD keeps its own ``aspect_ratios``).
_FASTER_RCNN_ONLY = {"aspect_ratios": "rpn.aspect_ratios"}


def check_renamed_options(model_cfg: DictConfig | dict, where: str = "detector.model") -> None:
    """ValueError naming the new name for every old option name in ``model_cfg``."""
    keys = set(model_cfg.keys())
    renamed = {k: v for k, v in RENAMED_OPTIONS.items() if k in keys}
    if "faster_rcnn" in str(model_cfg.get("_target_", "")):
        renamed.update({k: v for k, v in _FASTER_RCNN_ONLY.items() if k in keys})
    if model_cfg.get("weights") is not None:
        raise ValueError(f"{where}.weights is replaced by the run's weights=FILE_OR_RUN_FOLDER (a whole-detector "
                         "state_dict, a detbench checkpoint or a run folder): one key for a whole detector's weights")
    if renamed:
        listed = "; ".join(f"{where}.{old} is now {new}" for old, new in sorted(renamed.items()))
        raise ValueError(f"renamed options (README, 'Shared settings'): {listed}")


def load_torch_file(path: str | Path, what: str = "weights") -> Any:
    """``torch.load`` of ``path`` onto the CPU with ``weights_only=True`` (a file can never run
    code); a missing, truncated or foreign file is a ValueError naming it and ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{what} file {path} is corrupt or not a torch file: {type(error).__name__}: "
                         f"{error}") from error


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """A state_dict from ``path``: a ``torch.save``d dict of tensors, or a detbench checkpoint
    (its ``model`` entry); ValueError naming the file otherwise."""
    state = load_torch_file(path, what)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a detbench checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} file {path}: expected a state_dict (a dict of tensors), "
                         f"got {type(state).__name__}")
    return state


def fetch_backbone_weights(model: Detector, spec: str) -> tuple[dict[str, torch.Tensor], str, Any]:
    """(state_dict, source, enum member or None) for ``backbone_weights=spec``: an existing
    file path, else a name of ``model.backbone_weights_enum()``."""
    if Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        return read_state_dict(path, "backbone_weights"), f"file:{path}", None
    enum = model.backbone_weights_enum()
    looks_like_path = "/" in spec or spec.endswith((".pt", ".pth", ".bin"))
    if enum is None or looks_like_path:
        known = f"; or a name of {enum.__name__}: {[w.name for w in enum]}" if enum else ""
        raise ValueError(f"backbone_weights: {spec} is not a file{known}")
    try:
        chosen = enum[spec]
    except KeyError:
        raise ValueError(f"backbone_weights: unknown {enum.__name__} '{spec}'; choose from "
                         f"{[w.name for w in enum]} or give a local state_dict file") from None
    return chosen.get_state_dict(progress=False), f"torchvision:{enum.__name__}.{chosen.name}", chosen


def normalization_of(member: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) on [0, 1] images that a torchvision weights enum member's transforms use."""
    if member is None:
        return None
    transforms = member.transforms()
    mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else None


def build_detector(model_cfg: DictConfig, num_classes: int) -> Detector:
    """Instantiate ``detector.model`` for ``num_classes`` classes and load the backbone weights it
    names (``backbone_weights``); ``weights_source`` records what was loaded."""
    check_renamed_options(model_cfg)
    spec = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    backbone_weights = spec.pop("backbone_weights", None)
    spec.pop("weights", None)   # null (check_renamed_options refused a value)
    model = instantiate(spec, num_classes=num_classes)
    if backbone_weights:
        state, source, member = fetch_backbone_weights(model, str(backbone_weights))
        model.load_backbone_state(state, source)
        normalization = normalization_of(member)
        if normalization and spec.get("image_mean") is None and spec.get("image_std") is None:
            model.set_normalization(*normalization)
            log.info("input normalisation follows %s: mean %s, std %s", source, *normalization)
    log.info("%s weights: %s", type(model).__name__, model.weights_source)
    return model


def weights_file(path: str | Path) -> Path:
    """The file behind ``weights=``: a run folder's ``checkpoints/last.pt``, else ``path`` itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        checkpoint = last_checkpoint(path)
        if not checkpoint.is_file():
            raise ValueError(f"weights={path}: a folder without {checkpoint.relative_to(path)} (give a run folder "
                             "whose training finished, a checkpoint or a state_dict file)")
        return checkpoint
    return path


def load_run_weights(model: Detector, path: str | Path) -> None:
    """The run's ``weights=``: a run folder, a detbench checkpoint or a whole-detector state_dict."""
    path = weights_file(path)
    model.load_detector_state(read_state_dict(path, "weights"), f"file:{path}")
