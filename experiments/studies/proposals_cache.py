"""The on-disk proposal cache: one folder per (dataset, method), one file per image content.

Layout::

    <root>/settings.json          the settings the boxes were made with (and the OpenCV version)
    <root>/boxes/<sha1>.npz       boxes float32 [P, 4] x1 y1 x2 y2 (pixels of the image as given),
                                  seconds (float, the selective-search time of that image)

An image is keyed by the SHA-1 of its uint8 pixels and shape (``image_key``), so the cache
belongs to image contents, not file names: a changed or different image file is a miss and is
computed, never served another image's boxes. A folder made with other settings is refused
(``on_mismatch="refuse"``: ``ProposalCacheMismatch``) or emptied and rebuilt
(``"rebuild"``), in both cases with a message naming each setting that differs. Writes go
through a temporary file and a rename, so several jobs (detectors, seeds) may share a folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class ProposalCacheMismatch(ValueError):
    """A cache folder made with other settings than the ones asked for."""


def image_key(image: np.ndarray) -> str:
    """SHA-1 (hex) of a uint8 [H, W, 3] image's pixels and shape: the cache key."""
    digest = hashlib.sha1(f"{image.shape}|{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def settings_difference(stored: dict, wanted: dict) -> list[str]:
    """'name: stored -> wanted' for every setting that differs (missing on either side too)."""
    names = sorted(set(stored) | set(wanted))
    return [f"{n}: {stored.get(n, '<absent>')!r} -> {wanted.get(n, '<absent>')!r}"
            for n in names if stored.get(n) != wanted.get(n)]


class ProposalCache:
    """Boxes per image key under ``root``, made with ``settings`` (a flat JSON-able dict).

    on_mismatch: "rebuild" (log the differences, empty the folder, start again) or "refuse"
    (raise ``ProposalCacheMismatch`` naming them).
    """

    def __init__(self, root: str | Path, settings: dict, on_mismatch: str = "rebuild") -> None:
        if on_mismatch not in ("rebuild", "refuse"):
            raise ValueError(f"on_mismatch must be 'rebuild' or 'refuse', got {on_mismatch!r}")
        self.root = Path(root)
        self.settings = dict(settings)
        self.boxes_dir = self.root / "boxes"
        settings_file = self.root / "settings.json"
        if settings_file.is_file():
            stored = json.loads(settings_file.read_text())
            differences = settings_difference(stored, self.settings)
            if differences:
                message = (f"proposal cache {self.root} was made with other settings ("
                           + "; ".join(differences) + ")")
                if on_mismatch == "refuse":
                    raise ProposalCacheMismatch(message + ": refused (delete the folder or allow a rebuild)")
                log.warning("%s: rebuilding it", message)
                shutil.rmtree(self.boxes_dir, ignore_errors=True)
                settings_file.unlink()
        self.boxes_dir.mkdir(parents=True, exist_ok=True)
        if not settings_file.is_file():
            _atomic_write(settings_file, json.dumps(self.settings, indent=1, sort_keys=True).encode())

    def path(self, key: str) -> Path:
        return self.boxes_dir / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, float] | None:
        """(boxes float32 [P, 4], seconds) or None when ``key`` is not cached (or unreadable)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return stored["boxes"].astype(np.float32), float(stored["seconds"])
        except (OSError, ValueError, KeyError) as error:   # a truncated file: computed again
            log.warning("proposal cache: unreadable %s (%s), computing it again", path, error)
            return None

    def put(self, key: str, boxes: np.ndarray, seconds: float) -> None:
        with tempfile.NamedTemporaryFile(dir=self.boxes_dir, suffix=".npz", delete=False) as handle:
            np.savez(handle, boxes=np.asarray(boxes, np.float32).reshape(-1, 4), seconds=np.float64(seconds))
        os.replace(handle.name, self.path(key))

    def keys(self) -> list[str]:
        """The image keys (content hashes) the cache holds."""
        return sorted(p.stem for p in self.boxes_dir.glob("*.npz"))


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)
