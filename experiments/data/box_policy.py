"""What a loader does with a bad box: the one documented policy, shared by every format.

``box_policy`` (a constructor argument of every file-backed dataset) is one of:

- ``"clip"`` (default): a box partly outside the image is clipped to it (counted as
  ``clipped``, kept); a box with a NaN/infinite coordinate (``nonfinite``), x2 <= x1 or
  y2 <= y1 (``zero_area``), or nothing left after clipping (``outside_image``) is dropped.
- ``"drop"``: every box that is not finite, not of positive width and height and wholly inside
  the image is dropped (reasons as above; partly outside is ``outside_image``).
- ``"error"``: the first such box raises :class:`AnnotationError` naming the file and the box.

A box whose class name / index is not in the class list is dropped as ``unknown_class``
(``"error"``: raises). Coordinates outside the image by at most ``TOLERANCE_PX`` (float
rounding in annotation tools) are clipped silently under every policy.

Every drop or clip is counted in the dataset's ``SkipLog`` (``dataset.skips``) with the file
it came from, so ``detbench-dataset`` can show it; reasons starting with ``clipped`` or
``fixed_`` are changes, not drops.
"""
from __future__ import annotations

import numpy as np

from experiments.data.base import SkipLog

BOX_POLICIES = ("drop", "clip", "error")
TOLERANCE_PX = 0.01
CHANGED_REASONS = ("clipped", "fixed_")


class AnnotationError(ValueError):
    """An annotation file or entry that breaks the format or the box policy."""


def check_policy(policy: str) -> str:
    if policy not in BOX_POLICIES:
        raise ValueError(f"box_policy must be one of {BOX_POLICIES}, got {policy!r}")
    return policy


def is_drop_reason(reason: str) -> bool:
    """True for SkipLog reasons that removed a box (not image-level, not a change)."""
    return not reason.startswith("image_") and not reason.startswith(CHANGED_REASONS)


def apply_box_policy(boxes: np.ndarray, image_size: tuple[int, int], policy: str,
                     skips: SkipLog, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check ``boxes`` float [N, 4] x1 y1 x2 y2 (pixels) against an image of ``image_size``
    (H, W) under ``policy``.

    Returns (boxes float64 [N, 4], possibly clipped; keep bool [N]). Drops and clips are
    counted in ``skips`` under ``where`` (the annotation file / entry).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    h, w = image_size
    keep = np.ones(len(boxes), dtype=bool)

    def reject(mask: np.ndarray, reason: str, problem: str) -> None:
        for i in np.flatnonzero(mask & keep):
            if policy == "error":
                raise AnnotationError(f"{where}: box {i} {boxes[i].tolist()} {problem} "
                                      f"(box_policy='error')")
            skips.add(reason, where, f"box {i} x1y1x2y2 {boxes[i].tolist()}")
        keep[mask] = False

    reject(~np.isfinite(boxes).all(axis=1), "nonfinite", "has a NaN or infinite coordinate")
    with np.errstate(invalid="ignore"):
        reject((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]), "zero_area",
               "has x2 <= x1 or y2 <= y1 (zero or negative size)")
        below = boxes[:, :2] < -TOLERANCE_PX  # [N, 2]
        above = boxes[:, 2:] > np.array([w, h]) + TOLERANCE_PX  # [N, 2]
        outside = below.any(axis=1) | above.any(axis=1)
    if policy == "clip":
        clipped = boxes.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h)
        with np.errstate(invalid="ignore"):
            empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        reject(empty & outside, "outside_image", f"lies wholly outside the {w}x{h} image")
        for i in np.flatnonzero(outside & keep):
            skips.add("clipped", where, f"box {i} {boxes[i].tolist()} clipped to the {w}x{h} image")
        boxes = np.where(keep[:, None], clipped, boxes)
    else:
        reject(outside, "outside_image", f"lies partly or wholly outside the {w}x{h} image")
    # Within-tolerance overshoot: clip silently so every kept box is inside the image; a
    # sliver that this leaves empty (a box just past the border) goes as outside_image.
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    with np.errstate(invalid="ignore"):
        reject((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]), "outside_image",
               f"lies outside the {w}x{h} image")
    return boxes, keep


def reject_unknown_class(name: object, policy: str, skips: SkipLog, where: str,
                         class_names: list[str]) -> None:
    """Count (or, under ``"error"``, raise for) an object whose class is not in the list."""
    if policy == "error":
        raise AnnotationError(f"{where}: class {name!r} is not in the class list {class_names} "
                              f"(box_policy='error')")
    skips.add("unknown_class", where, f"class {name!r}")
    skips.unknown_classes[str(name)] += 1
