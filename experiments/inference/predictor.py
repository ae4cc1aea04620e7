"""The prediction loop: frames in, detections drawn, predictions.json and predict_stats.json out.

Frames are decoded in a background thread (``prefetch``), batched (``batch_size``), moved to the
device and run through each detector's three stages, timed by the speed protocol's stage timer
(``experiments.speed.benchmark``: the device synchronised at every stage boundary). Then the
detections are filtered (``score_thresh``: keep scores >= it, on top of the detector's own
threshold; ``operating_point``: each run's F1-maximising threshold on its validation split;
``classes``: keep only those class names), drawn (over the image's ground truth when ``truth``
has it: ``experiments.inference.truth``) and written.

Stages in predict_stats.json (seconds in ``stages_s``, per frame in ``stages_ms_per_frame``):

- ``decode``: reading and decoding, in the background thread (overlaps everything else);
  ``decode_wait``: the time the loop waited for it, i.e. what the overlap did not hide;
- ``preprocess``: host-to-device copy and the detector's preprocess (resize, normalise, stack);
- ``network``; ``postprocess``: the detector's postprocess, the filters, the copy back to the
  CPU and the predictions.json records;
- ``drawing``: boxes and labels (and side-by-side panels); ``encode``: the video encoder or
  the image files.

``fps_end_to_end`` is frames / wall seconds from the first frame asked for to the last one
written, model warm-up (the first batch) included: the rate a user gets. With several
detectors (side-by-side), the model stages are summed over them and also reported per detector.

Ctrl-C (KeyboardInterrupt) stops the loop: the video is closed (playable, holding every frame
written so far) and both JSON files are written with ``interrupted: true``.
"""
from __future__ import annotations

import logging
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

from analysis.operating_point import run_operating_point
from experiments.inference.drawing import caption, draw_detections, draw_truth, side_by_side, to_uint8
from experiments.inference.outputs import VideoWriter, coco_records, save_annotated_image, write_json
from experiments.inference.prefetch import Prefetcher
from experiments.inference.run_loader import LoadedDetector, load_detector
from experiments.inference.sources import Frame, Skip, SourceError, VideoSource, open_source
from experiments.inference.truth import AUTO, GroundTruth
from experiments.job.identity import device_name, synchronize
from experiments.speed.benchmark import StageTimer  # the speed protocol's synchronised stages

log = logging.getLogger(__name__)
STAGES = ("decode", "decode_wait", "preprocess", "network", "postprocess", "drawing", "encode")
MAX_SKIP_EXAMPLES = 20
OPERATING_POINT = "operating_point"


def thresholds(detectors: list[LoadedDetector], score_thresh: float | str) -> list[float]:
    """One score threshold per detector: ``score_thresh`` for all, or with "operating_point" each
    run's F1-maximising threshold on its validation split (``analysis.operating_point``, from the
    run folder's detections.json and ground_truth.json)."""
    if score_thresh != OPERATING_POINT:
        return [float(score_thresh)] * len(detectors)
    found = []
    for d in detectors:
        point = run_operating_point(d.run_dir)
        if point is None:
            raise ValueError(f"score_thresh={OPERATING_POINT} needs the run folder's detections.json and "
                             f"ground_truth.json (its eval stage): none in {d.run_dir}")
        log.info("%s: operating point score >= %.3f (F1 %.1f%%, precision %.1f%%, recall %.1f%% on val)", d.name,
                 point["threshold"], 100 * point["f1"], 100 * point["precision"], 100 * point["recall"])
        found.append(point["threshold"])
    return found


@dataclass
class PredictOptions:
    """The knobs of ``conf/predict.yaml`` (see there)."""

    score_thresh: float | str = 0.25     # or "operating_point": each run's F1-maximising threshold on val
    classes: list[str] | None = None
    batch_size: int = 1
    save_images: bool = True
    save_video: bool = True
    every_nth_frame: int = 1
    max_frames: int = 0
    video_codec: str = "libx264"
    prefetch_frames: int = 16
    progress: bool = True
    truth: str | None = AUTO         # ground truth drawn beside the detections: auto, a COCO JSON, or None

    def check(self) -> None:
        if self.batch_size < 1 or self.every_nth_frame < 1 or self.max_frames < 0:
            raise ValueError(f"need batch_size >= 1, every_nth_frame >= 1, max_frames >= 0; got "
                             f"{self.batch_size}, {self.every_nth_frame}, {self.max_frames}")
        if self.score_thresh == OPERATING_POINT:
            return
        if not isinstance(self.score_thresh, (int, float)) or not 0.0 <= self.score_thresh <= 1.0:
            raise ValueError(f"score_thresh must lie in [0, 1] or be '{OPERATING_POINT}', got {self.score_thresh}")


def prediction_files(detectors: list[LoadedDetector]) -> list[str]:
    """predictions.json for one detector; predictions_<k>_<name>.json each for several."""
    if len(detectors) == 1:
        return ["predictions.json"]
    return [f"predictions_{k}_{d.name}.json" for k, d in enumerate(detectors)]


def keep(detection: dict, score_thresh: float, labels: set[int] | None) -> dict:
    """The detection's boxes with score >= score_thresh and a label in ``labels`` (None: all), on the CPU."""
    mask = detection["scores"] >= score_thresh
    if labels is not None:
        mask &= torch.isin(detection["labels"], torch.tensor(sorted(labels), device=mask.device))
    return {k: v[mask].cpu() for k, v in detection.items()}


def _where(frame: Frame) -> dict:
    """predictions.json's fields locating a frame: file_name (images) or frame_index, timestamp_s (video)."""
    if frame.timestamp_s is None:
        return {"file_name": frame.name}
    return {"frame_index": frame.index, "timestamp_s": frame.timestamp_s}


class Predictor:
    """One call of detbench-predict: ``run()`` processes the source and writes the outputs."""

    def __init__(self, weights: list[str], source: str, out: Path, device: torch.device,
                 options: PredictOptions):
        options.check()
        self.source = open_source(source)
        self.detectors = [load_detector(w, device) for w in weights]
        self.labels = [d.labels_of(options.classes) for d in self.detectors]
        self.thresholds = thresholds(self.detectors, options.score_thresh)
        self.truth = GroundTruth.load(options.truth, [d.run_dir for d in self.detectors])
        self.frames_with_truth = 0
        self.timers = [StageTimer(d.model, device, "fp32", False, False) for d in self.detectors]
        self.out, self.device, self.options = Path(out), device, options
        self.out.mkdir(parents=True, exist_ok=True)
        self.records: list[list[dict]] = [[] for _ in self.detectors]
        self.seconds: dict[str, float] = defaultdict(float)
        self.per_detector = [defaultdict(float) for _ in self.detectors]
        self.frames, self.skips, self.skip_examples = 0, 0, []
        self.writer = None
        if isinstance(self.source, VideoSource) and options.save_video:
            fps = self.source.fps / options.every_nth_frame
            path = self.out / f"{self.source.path.stem}.mp4"
            if path.resolve() == self.source.path.resolve():  # never overwrite the source
                path = path.with_name(f"{path.stem}_annotated.mp4")
            self.writer = VideoWriter(path, fps, options.video_codec)

    def run(self) -> dict:
        opts = self.options
        frames = Prefetcher(self.source.frames(opts.every_nth_frame, opts.max_frames),
                            depth=max(opts.prefetch_frames, 2 * opts.batch_size))
        bar = tqdm(total=self.source.expected_frames(opts.every_nth_frame, opts.max_frames), unit="frame",
                   disable=not opts.progress, desc="detbench-predict")
        interrupted, start = False, time.perf_counter()
        try:
            with torch.inference_mode():
                batch: list[Frame] = []
                for item in frames:
                    if isinstance(item, Skip):
                        self._skip(item)
                        bar.update(1)
                        continue
                    batch.append(item)
                    if len(batch) == opts.batch_size:
                        self._process(batch)
                        bar.update(len(batch))
                        batch = []
                if batch:
                    self._process(batch)
                    bar.update(len(batch))
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: keeping the %d frames written so far", self.frames)
        finally:
            wall = time.perf_counter() - start
            bar.close()
            frames.close()
            self.seconds["decode_wait"] = frames.wait_s
            try:
                if self.writer is not None:
                    self.writer.close()
            finally:  # the JSON files are written whatever happened to the video
                stats = self._write(wall, interrupted)
        if self.frames == 0 and self.skips and not interrupted:
            raise SourceError(f"source: none of the {self.skips} frames or images could be decoded "
                              f"(first: {self.skip_examples[0]['error']}); see {self.out / 'predict_stats.json'}")
        return stats

    def _skip(self, skip: Skip) -> None:
        self.skips += 1
        if len(self.skip_examples) < MAX_SKIP_EXAMPLES:
            self.skip_examples.append({"index": skip.index, "name": skip.name, "error": skip.error})
        log.warning("skipped %s: %s", skip.name, skip.error)

    def _process(self, batch: list[Frame]) -> None:
        opts, t = self.options, time.perf_counter
        self.seconds["decode"] += sum(f.decode_s for f in batch)
        synchronize(self.device)
        t0 = t()
        images = [f.image.to(self.device, non_blocking=True) for f in batch]
        synchronize(self.device)
        copy_s = t() - t0
        kept_per_detector, records = [], []  # records[k][i]: detector k's results on frame i
        for k, (detector, timer) in enumerate(zip(self.detectors, self.timers)):
            (proposal, pre, net, post), detections = timer(images)
            pre += proposal   # R-CNN / Fast R-CNN's selective search counts as pre-processing here
            t0 = t()
            kept = [keep(d, self.thresholds[k], self.labels[k]) for d in detections]
            records.append([coco_records(detection, detector.label_to_category_id, frame.index, **_where(frame))
                            for frame, detection in zip(batch, kept)])
            post += t() - t0
            for stage, seconds in (("preprocess", pre + copy_s / len(self.detectors)), ("network", net),
                                   ("postprocess", post)):
                self.per_detector[k][stage] += seconds
                self.seconds[stage] += seconds
            kept_per_detector.append(kept)
        for i, frame in enumerate(batch):
            t0 = t()
            base = to_uint8(frame.image)
            truth = self.truth.of(frame.name, *base.shape[-2:]) if self.truth and frame.timestamp_s is None else None
            if truth is not None:   # under the detections, in every panel
                base = draw_truth(base, *truth)
                self.frames_with_truth += 1
            panels = [draw_detections(base, kept[i], d.class_names)
                      for d, kept in zip(self.detectors, kept_per_detector)]
            if len(panels) > 1:
                panels = [caption(p, f"{k}: {d.name}") for k, (p, d) in enumerate(zip(panels, self.detectors))]
            annotated = side_by_side(panels)
            t1 = t()
            self.seconds["drawing"] += t1 - t0
            if self.writer is not None:
                self.writer.write(annotated, frame.index // opts.every_nth_frame)
            elif frame.timestamp_s is None and opts.save_images:
                save_annotated_image(annotated, self.out / "images" / frame.name)
            self.seconds["encode"] += t() - t1
            for k in range(len(self.detectors)):  # reported once written: Ctrl-C keeps the two in step
                self.records[k].extend(records[k][i])
            self.frames += 1

    def _write(self, wall_s: float, interrupted: bool) -> dict:
        for name, records in zip(prediction_files(self.detectors), self.records):
            write_json(self.out / name, records)
        per_frame = {s: 1e3 * self.seconds[s] / self.frames if self.frames else None for s in STAGES}
        model_s = sum(self.seconds[s] for s in ("preprocess", "network", "postprocess"))
        stats = {
            "source": str(getattr(self.source, "path", None) or self.source.description),
            "source_kind": self.source.kind, "frames": self.frames, "skipped": self.skips,
            "skipped_examples": self.skip_examples, "interrupted": interrupted,
            "wall_s": wall_s, "fps_end_to_end": self.frames / wall_s if wall_s > 0 else None,
            "fps_model": self.frames / model_s if model_s > 0 else None,
            "stages_ms_per_frame": per_frame, "stages_s": {s: self.seconds[s] for s in STAGES},
            "detectors": [{"name": d.name, "run_dir": str(d.run_dir), "checkpoint": str(d.checkpoint),
                           "run_status": d.run_status, "predictions": f, "boxes": len(r),
                           "score_thresh": self.thresholds[k],
                           **{f"{s}_ms_per_frame": 1e3 * self.per_detector[k][s] / self.frames if self.frames
                              else None for s in ("preprocess", "network", "postprocess")}}
                          for k, (d, f, r) in enumerate(zip(self.detectors, prediction_files(self.detectors),
                                                            self.records))],
            "batch_size": self.options.batch_size, "score_thresh": self.options.score_thresh,
            "truth": str(self.truth.path) if self.truth else None, "frames_with_truth": self.frames_with_truth,
            "classes": self.options.classes, "every_nth_frame": self.options.every_nth_frame,
            "max_frames": self.options.max_frames, "device": device_name(self.device),
            "device_type": self.device.type, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
            "python_version": platform.python_version(),
            "timing": "device synchronised at every stage boundary (experiments.speed.benchmark's speed protocol); "
                      "decode runs in a background thread and overlaps the other stages (decode_wait: the "
                      "time the loop waited for it); wall_s includes the first batch's warm-up",
        }
        if isinstance(self.source, VideoSource):
            stats.update({"source_fps": float(self.source.fps), "source_size": list(self.source.size),
                          "source_frame_count": self.source.frame_count})
            if self.writer is not None:
                stats.update({"video": str(self.writer.path), "video_fps": float(self.writer.fps),
                              "video_frames": self.writer.frames})
        write_json(self.out / "predict_stats.json", stats)
        return stats
