"""COCO's object size buckets, the one home of their bounds (pixels² of ``Target["area"]``).

small: area < 32², medium: 32² <= area < 96², large: area >= 96² for counting an object once
(``size_of``). The evaluator's ranges (``AREA_RANGES``, pycocotools' ``areaRng``) include both
ends, so an object of area exactly 32² or 96² is scored in two buckets, as COCOeval scores it.
"""
from __future__ import annotations

SMALL_MAX = 32.0 ** 2
MEDIUM_MAX = 96.0 ** 2
LARGEST = 1e5 ** 2      # COCOeval's upper bound of "all" and "large"
#: name -> (lo, hi), both inclusive, in COCOeval's order (all, small, medium, large).
AREA_RANGES = {"all": (0.0, LARGEST), "small": (0.0, SMALL_MAX), "medium": (SMALL_MAX, MEDIUM_MAX),
               "large": (MEDIUM_MAX, LARGEST)}


def size_of(area: float) -> str:
    """The one bucket an object of ``area`` pixels² is counted in (half-open ranges)."""
    return "small" if area < SMALL_MAX else "medium" if area < MEDIUM_MAX else "large"
