"""The proposal stage of a job whose detector classifies external proposals (R-CNN, Fast R-CNN).

``attach(model, cfg)``, in the build step: gives the detector its proposal source,
``SelectiveSearchProposals`` with the settings of ``detector.proposals`` (a detector without
``external_proposals`` is left alone). Keys of ``detector.proposals`` besides
``SelectiveSearchSettings``' fields: ``cache_dir`` (null: ``default_cache_dir``), ``workers``
(processes; null: every core) and ``on_mismatch`` ("rebuild" | "refuse").

``stage(cfg, ctx, scored_split)``, before training: computes the proposals of every image the job
reads (the training images, the validation images training scores, the images the eval stage
scores: the test split under ``eval.split=test``), once, in ``workers`` processes (cached on disk;
a second job, detector or seed reads them), and writes into metrics.json
``proposal_seconds_per_image`` (selective search, one core per image, as recorded when each image
was computed), ``proposal_stage_s`` (this stage's wall time), ``proposal_images_computed``, and
over the images the eval stage scores ``proposals_per_image``, ``proposal_images_short`` (fewer
than the detector scores) and
``proposal_images_empty`` (none: the image is still scored, with no detections). When it computed
any image, the machine is read before and after (``experiments.speed.busy_guard``; the load less
this job's workers): ``proposal_time_reliable`` and, when disturbed, ``proposal_time_note`` (the
seconds kept, marked; the speed stage's ``proposal_ms_b*`` are timed single-process, guarded apart).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.speed.busy_guard import marks, read_machine
from experiments.studies.proposals import SelectiveSearchProposals, SelectiveSearchSettings, to_uint8

log = logging.getLogger(__name__)
RUN_KEYS = ("cache_dir", "workers", "on_mismatch")


def default_cache_dir(cfg: DictConfig, settings: SelectiveSearchSettings) -> Path:
    """Beside the dataset's files (``<dataset.root>/derived/proposals``), or
    ``runs/cache/proposals/<dataset name>`` for a dataset without files; one folder per
    settings (``selective_search_<digest>``), so detectors with other settings never evict
    each other's boxes."""
    root = OmegaConf.select(cfg, "dataset.root", default=None)
    base = Path(root) / "derived" / "proposals" if root else Path("runs/cache/proposals") / str(cfg.dataset.name)
    digest = hashlib.sha1(json.dumps(settings.recorded(), sort_keys=True).encode()).hexdigest()[:10]
    return base / f"selective_search_{digest}"


def attach(model, cfg: DictConfig) -> dict:
    """Give ``model`` its proposal source when it takes external proposals; the facts recorded."""
    if not getattr(model, "external_proposals", False):
        return {}
    spec = OmegaConf.to_container(cfg.detector.get("proposals") or {}, resolve=True)
    known = {f.name for f in fields(SelectiveSearchSettings)}
    unknown = sorted(set(spec) - known - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"detector.proposals: unknown keys {unknown}; known: {sorted(known | set(RUN_KEYS))}")
    settings = SelectiveSearchSettings(**{k: v for k, v in spec.items() if k in known})
    cache_dir = Path(spec.get("cache_dir") or default_cache_dir(cfg, settings))
    workers = spec.get("workers") or os.cpu_count() or 1
    model.proposal_source = SelectiveSearchProposals(settings, cache_dir, workers, spec.get("on_mismatch", "rebuild"))
    log.info("proposals: selective search (%s mode), cache %s", settings.mode, cache_dir)
    return {"proposal_method": f"selective_search_{settings.mode}", "proposal_cache": str(cache_dir),
            "proposal_max": settings.max_proposals}


def stage(cfg: DictConfig, ctx, scored_split: tuple[str, object]) -> dict:
    """Precompute the proposals of every image the job reads, before it reads them: the training
    split, the validation images training scores (``train.val_images`` when it validates) and the
    images the eval stage scores (``scored_split``: (name, dataset), the test split when
    ``eval.split`` is test, ``eval.max_images`` of them); count them on the scored split. {} for
    detectors that take no external proposals."""
    source = getattr(ctx.model, "proposal_source", None)
    if not getattr(ctx.model, "external_proposals", False) or not isinstance(source, SelectiveSearchProposals):
        return {}
    start = time.perf_counter()
    scored_name, scored_set = scored_split
    scored = min(len(scored_set), int(cfg.eval.max_images) or len(scored_set))
    splits = [(scored_name, scored_set, scored)]
    if ctx.train_set is not None:
        if "train" in cfg.stages and (int(cfg.train.val_every) or int(cfg.train.get("validations", 0))):
            validated = min(len(ctx.val_set), int(cfg.train.val_images) or len(ctx.val_set))
            if scored_name != "val":
                splits.insert(0, ("val", ctx.val_set, validated))
            else:
                splits[0] = (scored_name, scored_set, max(scored, validated))
        splits.insert(0, ("train", ctx.train_set, len(ctx.train_set)))
    metrics, seconds, computed = {}, [], 0
    before = read_machine()   # the seconds per image are a timing: judged like every other
    for name, dataset, count in splits:
        made = source.precompute((dataset[i][0] for i in range(count)), total=count,
                                 desc=f"selective search ({name})")
        seconds.append((made["proposal_seconds_per_image"], count))
        computed += made["proposal_images_computed"]
    wanted = ctx.model.num_candidates(tuple(scored_set[0][0].shape[-2:]))
    counts = np.array([len(source.lookup(to_uint8(scored_set[i][0]))) for i in range(scored)])
    metrics.update({
        "proposal_seconds_per_image": float(sum(s * n for s, n in seconds) / sum(n for _, n in seconds)),
        "proposal_images_computed": computed, "proposal_stage_s": time.perf_counter() - start,
        "proposals_per_image": float(counts.mean()) if len(counts) else float("nan"),
        "proposals_wanted": int(wanted), "proposal_images_short": int((counts < wanted).sum()),
        "proposal_images_empty": int((counts == 0).sum())})
    if computed:   # images read from the cache keep the seconds recorded when they were computed
        metrics.update(marks(before, read_machine(own=1 + source.workers), "proposal_time",
                             "selective search's seconds per image"))
        if not metrics["proposal_time_reliable"]:
            log.warning("proposals: %s; proposal_seconds_per_image is not a speed", metrics["proposal_time_note"])
    log.info("proposals: %.2f s per image (selective search), %.0f per scored (%s) image; %d of %d images short "
             "of %d, %d empty", metrics["proposal_seconds_per_image"], metrics["proposals_per_image"], scored_name,
             metrics["proposal_images_short"], scored, wanted, metrics["proposal_images_empty"])
    return metrics
