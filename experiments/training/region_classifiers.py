"""R-CNN's second training phase, run after its gradient iterations: per-class SVMs and box
regressors fitted on cached region features (``detectors.rcnn_fit``), settings from
``detector.rcnn_fit``. The checkpoint is saved again afterwards, so that ``weights=<run folder>``
carries the SVMs (they are buffers of the model)."""
from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def training_batches(dataset, batch_size: int, device):
    """(images, targets) of ``dataset`` in order, ``batch_size`` at a time, on ``device``."""
    for start in range(0, len(dataset), batch_size):
        pairs = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = [image.to(device) for image, _ in pairs]
        targets = [{k: v.to(device) if hasattr(v, "to") else v for k, v in target.items()} for _, target in pairs]
        yield images, targets


def second_training_phase(cfg: DictConfig, ctx, trainer) -> dict:
    """Fit ``ctx.model``'s region classifiers on ``ctx.train_set``; {"rcnn_fit_s", ...the fit's numbers}."""
    settings = OmegaConf.to_container(cfg.detector.get("rcnn_fit") or {}, resolve=True)
    start = time.perf_counter()
    report = ctx.model.fit_after_training(training_batches(ctx.train_set, cfg.train.batch_size, ctx.device),
                                          **settings)
    report["rcnn_fit_s"] = time.perf_counter() - start
    if report.get("rcnn_svm_skipped"):
        log.warning("R-CNN: classes %s have no positive region: no SVM, no detections of them",
                    report["rcnn_svm_skipped"])
    log.info("R-CNN SVMs and box regressors fitted in %.0f s (%s)", report["rcnn_fit_s"], report)
    trainer.save()
    return report
