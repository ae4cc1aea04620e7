"""A seeded train/val split for data that has none of its own (``dataset.val_fraction``).

Stratified by class where possible: each image is put in the stratum of its rarest class (by
the number of images holding it; images without objects form their own stratum), each stratum
is shuffled with ``seed`` and ``round(val_fraction * n)`` of it goes to val, with at least one
image of every stratum of two or more images, so a rare class appears on both sides. The split
depends only on the image keys, their classes, ``val_fraction`` and ``seed``: the train and
the val dataset of one config (built separately) and every detector of a sweep get the same.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence


def stratified_split(keys: Sequence[str], classes: Sequence[set[str]], val_fraction: float,
                     seed: int) -> tuple[list[str], list[str]]:
    """(train keys, val keys), each in the order of ``keys``.

    keys: one unique string per image (e.g. the XML path relative to the root).
    classes: per image, the class names it holds.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(set(keys)) != len(keys):
        raise ValueError("stratified_split: keys are not unique")
    images_per_class = Counter(c for cs in classes for c in set(cs))
    strata: dict[str, list[str]] = {}
    for key, cs in zip(keys, classes):
        rarest = min(cs, key=lambda c: (images_per_class[c], c)) if cs else ""
        strata.setdefault(rarest, []).append(key)
    rng = random.Random(seed)
    val: set[str] = set()
    for name in sorted(strata):
        members = sorted(strata[name])
        rng.shuffle(members)
        n_val = round(val_fraction * len(members))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.update(members[:n_val])
    return [k for k in keys if k not in val], [k for k in keys if k in val]


def split_fingerprint(train_ids: Sequence, val_ids: Sequence) -> str:
    """12 hex digits identifying a split (sha1 of the sorted train and val ids)."""
    text = "\n".join(map(str, sorted(map(str, train_ids)))) + "\n--\n" + \
        "\n".join(map(str, sorted(map(str, val_ids))))
    return hashlib.sha1(text.encode()).hexdigest()[:12]
