"""Selective search proposals (Uijlings et al. 2013) for R-CNN and Fast R-CNN, cached on disk.

``selective_search`` runs OpenCV's implementation (``cv2.ximgproc.segmentation``, from the
``opencv-contrib-python-headless`` wheel) in its fast mode, R-CNN's setting: HSV and Lab colour
spaces, the colour+texture+size+fill and size+fill strategies, Felzenszwalb segmentations at
k = base_k and base_k + inc_k, sigma 0.8; boxes with a side under ``min_side`` pixels dropped
(R-CNN: 20), duplicates dropped, at most ``max_proposals`` kept (R-CNN: 2000), best first.

Determinism: OpenCV ranks the hierarchy's regions by ``level * rand()`` with the C library's
``rand``, which ``cv2.setRNGSeed`` does not seed; ``seed_c_rand`` calls the C library's
``srand(seed)`` before each image, so the same image and settings always give the same ranked
boxes, in any process.

``SelectiveSearchProposals`` is the proposal source detectors take
(``detectors.region_proposals``): it keys each image by its content (``proposals_cache``),
serves cached boxes (and a mirrored image's boxes mirrored, so flip augmentation costs nothing),
computes what is missing (``precompute``: in worker processes, with a progress bar), records
the seconds each image took, and counts the images served with fewer proposals than wanted
(a flat image: counted, never an error) or none at all (the image is still scored).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from experiments.studies.proposals_cache import ProposalCache, image_key

log = logging.getLogger(__name__)

INSTALL_HINT = ("selective search needs OpenCV's contrib modules (cv2.ximgproc): "
                "pip install opencv-contrib-python-headless; if `import cv2` still lacks ximgproc, another "
                "OpenCV wheel (opencv-python, which imagecorruptions declares) overwrote it: "
                "pip install --force-reinstall --no-deps opencv-contrib-python-headless")


@dataclass(frozen=True)
class SelectiveSearchSettings:
    """mode: "fast" (R-CNN's) or "quality". base_k, inc_k, sigma: the Felzenszwalb
    segmentations (OpenCV's defaults 150, 150, 0.8). min_side: pixels; max_proposals: kept per
    image, best first. seed: of the C library's rand, which orders equal-level regions."""

    mode: str = "fast"
    base_k: int = 150
    inc_k: int = 150
    sigma: float = 0.8
    min_side: int = 20
    max_proposals: int = 2000
    seed: int = 0

    def recorded(self) -> dict:
        """What the cache records: these settings, the method and the OpenCV version."""
        return {"method": "opencv_selective_search", "opencv": require_ximgproc().__version__, **asdict(self)}


def require_ximgproc():
    """``cv2`` with its ``ximgproc`` module; ImportError naming the package otherwise."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(INSTALL_HINT)
    return cv2


def seed_c_rand(seed: int) -> None:
    """``srand(seed)`` of the C library OpenCV calls ``rand()`` from."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    libc.srand(ctypes.c_uint(seed))


def selective_search(image: np.ndarray, settings: SelectiveSearchSettings) -> tuple[np.ndarray, float]:
    """image uint8 [H, W, 3] RGB -> (boxes float32 [P, 4] x1 y1 x2 y2 pixels, best first,
    P <= max_proposals; seconds taken)."""
    cv2 = require_ximgproc()
    cv2.setNumThreads(1)
    start = time.perf_counter()
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))    # OpenCV wants BGR
    if settings.mode == "fast":
        search.switchToSelectiveSearchFast(settings.base_k, settings.inc_k, settings.sigma)
    elif settings.mode == "quality":
        search.switchToSelectiveSearchQuality(settings.base_k, settings.inc_k, settings.sigma)
    else:
        raise ValueError(f"selective search mode must be 'fast' or 'quality', got {settings.mode!r}")
    seed_c_rand(settings.seed)
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)   # x, y, w, h
    seconds = time.perf_counter() - start
    rects = rects[(rects[:, 2] >= settings.min_side) & (rects[:, 3] >= settings.min_side)]
    _, first = np.unique(rects, axis=0, return_index=True)
    rects = rects[np.sort(first)][: settings.max_proposals]                 # rank order kept
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    return boxes.astype(np.float32), seconds


def to_uint8(image: Tensor) -> np.ndarray:
    """float [3, H, W] in [0, 1] -> uint8 [H, W, 3] (exact for images decoded from uint8)."""
    return (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _search_job(args: tuple[str, np.ndarray, SelectiveSearchSettings]) -> tuple[str, np.ndarray, float]:
    key, image, settings = args
    return (key, *selective_search(image, settings))


class SelectiveSearchProposals:
    """The proposal source of R-CNN and Fast R-CNN (see ``detectors.region_proposals``).

    settings: ``SelectiveSearchSettings`` (or a mapping of its fields). cache_dir: the cache
    folder (None: memory only). workers: processes for ``precompute``. on_mismatch: what a
    cache folder made with other settings gets ("rebuild" or "refuse").
    """

    def __init__(self, settings: SelectiveSearchSettings | dict | None = None, cache_dir: str | Path | None = None,
                 workers: int = 1, on_mismatch: str = "rebuild", progress: bool = True) -> None:
        if not isinstance(settings, SelectiveSearchSettings):
            settings = SelectiveSearchSettings(**dict(settings or {}))
        require_ximgproc()
        self.settings = settings
        self.cache = ProposalCache(cache_dir, settings.recorded(), on_mismatch) if cache_dir else None
        self.workers, self.progress = max(1, int(workers)), progress
        self.memory: dict[str, tuple[np.ndarray, float]] = {}
        self.served: dict[str, int] = {}      # image key -> proposals served
        self.computed = 0                      # images computed (not read from the cache)

    # ---- the proposal source -------------------------------------------------------------
    def __call__(self, images: list[Tensor], fresh: bool = False) -> list[Tensor]:
        out = []
        for image in images:
            pixels = to_uint8(image)
            if fresh:   # the speed protocol: computed now, the cache neither read nor written
                boxes, _ = selective_search(pixels, self.settings)
            else:
                boxes = self.lookup(pixels)
            self.served[image_key(pixels)] = len(boxes)
            out.append(torch.from_numpy(boxes).to(image.device))
        return out

    def lookup(self, pixels: np.ndarray) -> np.ndarray:
        """Boxes of one uint8 image: cached, its mirror's boxes mirrored, or computed and stored."""
        key = image_key(pixels)
        found = self._get(key)
        if found is None:
            mirrored = self._get(image_key(np.ascontiguousarray(pixels[:, ::-1])))
            if mirrored is not None:
                width = pixels.shape[1]
                boxes = mirrored[0].copy()
                boxes[:, [0, 2]] = width - mirrored[0][:, [2, 0]]
                return boxes
            found = selective_search(pixels, self.settings)
            self._put(key, *found)
        return found[0]

    # ---- the cache -----------------------------------------------------------------------
    def precompute(self, images: Iterable[Tensor], total: int | None = None, desc: str = "selective search",
                   chunk: int = 64) -> dict:
        """Compute every image not yet cached, ``workers`` at a time, ``chunk`` images held at
        once, with a progress bar over ``total`` images; returns {"proposal_images",
        "proposal_images_computed", "proposal_seconds_per_image"} (the mean over all these
        images of the seconds recorded when each was computed)."""
        keys, computed, pending = [], 0, []
        bar = tqdm(total=total, desc=desc, disable=not self.progress)
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) if self.workers > 1 else None
        try:
            for image in images:
                pixels = to_uint8(image)
                key = image_key(pixels)
                keys.append(key)
                if self._get(key) is None and key not in {k for k, _, _ in pending}:
                    pending.append((key, pixels, self.settings))
                else:
                    bar.update()
                if len(pending) >= chunk:
                    computed += self._compute(pending, pool, bar)
                    pending = []
            computed += self._compute(pending, pool, bar)
        finally:
            if pool is not None:
                pool.shutdown()
            bar.close()
        if computed:
            log.info("selective search: computed %d of %d images (the rest were cached)", computed, len(keys))
        seconds = [self._get(k)[1] for k in keys]
        return {"proposal_images": len(keys), "proposal_images_computed": computed,
                "proposal_seconds_per_image": float(np.mean(seconds)) if seconds else float("nan")}

    def _compute(self, jobs: list, pool: ProcessPoolExecutor | None, bar: tqdm) -> int:
        results = pool.map(_search_job, jobs, chunksize=4) if pool is not None and len(jobs) > 1 \
            else map(_search_job, jobs)
        for key, boxes, seconds in results:
            self._put(key, boxes, seconds)
            bar.update()
        return len(jobs)

    def stats(self, wanted: int | None = None) -> dict:
        """Counts over the images served so far: mean proposals, images with fewer than
        ``wanted`` (default ``max_proposals``) and with none."""
        counts = np.array(list(self.served.values()) or [0])
        wanted = self.settings.max_proposals if wanted is None else wanted
        return {"proposal_images_served": len(self.served),
                "proposals_per_image": float(counts.mean()) if self.served else float("nan"),
                "proposal_images_short": int((counts < wanted).sum()) if self.served else 0,
                "proposal_images_empty": int((counts == 0).sum()) if self.served else 0,
                "proposals_wanted": int(wanted)}

    def _get(self, key: str) -> tuple[np.ndarray, float] | None:
        if key in self.memory:
            return self.memory[key]
        found = self.cache.get(key) if self.cache else None
        if found is not None:
            self.memory[key] = found
        return found

    def _put(self, key: str, boxes: np.ndarray, seconds: float) -> None:
        self.memory[key] = (boxes, seconds)
        self.computed += 1
        if self.cache:
            self.cache.put(key, boxes, seconds)
