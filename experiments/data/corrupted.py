"""A dataset seen through one COCO-C style corruption (Michaelis et al. 2019) at one severity.

``CorruptedDataset(dataset, corruption, severity, seed)[i]`` is ``dataset[i]`` with its image
corrupted by ``imagecorruptions`` (the benchmark authors' code, see ``corruption_library``), in
whichever process loads the item: with ``DataLoader(num_workers=N)`` the work is spread over the
N workers, and nothing is cached. Targets are unchanged (no corruption moves pixels far enough
to move a box; the benchmark keeps the clean annotations too).

Determinism: every item gets its own seed, ``corruption_seed(seed, image_id, corruption,
severity)``, a CRC-32 of those four values; ``imagecorruptions`` draws from numpy's global
generator, which is seeded with it just before the call and put back as it was afterwards. So an
image's corrupted pixels depend on nothing else: not on the worker, the batch, the DDP rank or
the order.

Image conversion: float [3, H, W] in [0, 1] -> uint8 [H, W, 3] (``round(255 x)``), the corruption,
then back to float / 255. Severity 0 returns the image untouched (no rounding), so severity 0 is
the clean evaluation exactly. One-channel images are repeated to three and four-channel (RGBA)
images lose their alpha channel, as ``experiments.data.images.load_image`` does for files.
"""
from __future__ import annotations

import logging
import zlib

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from detectors.base import Target

# Michaelis et al.'s 15 benchmark corruptions in their order and family, then the 4 held out.
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
BENCHMARK = tuple(name for names in FAMILIES.values() for name in names)
HELD_OUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
HELD_OUT_FAMILY = {"speckle_noise": "noise", "gaussian_blur": "blur", "spatter": "weather",
                   "saturate": "digital"}
CORRUPTIONS = BENCHMARK + HELD_OUT
SEVERITIES = (1, 2, 3, 4, 5)
# imagecorruptions.corrupt refuses images under 32 pixels a side (its own check).
MIN_SIDE = {name: 32 for name in CORRUPTIONS}

log = logging.getLogger(__name__)


def family_of(corruption: str) -> str:
    """'noise', 'blur', 'weather' or 'digital' (held-out ones: the family they resemble)."""
    for family, names in FAMILIES.items():
        if corruption in names:
            return family
    return HELD_OUT_FAMILY[corruption]


def check_corruptions(corruptions, severities) -> None:
    """ValueError naming the bad entries and the valid ones."""
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"robustness.corruptions: unknown {unknown}; valid corruptions are "
                         f"{list(BENCHMARK)} (the benchmark's 15) and {list(HELD_OUT)} (held out)")
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 5]
    if bad:
        raise ValueError(f"robustness.severities: {bad} are not severities; use integers 1-5 "
                         f"(0 means the clean images)")


def robustness_plan(corruptions, severities, images, num_workers) -> tuple[list[str], list[int], int]:
    """(corruptions, severities, images) of ``robustness.*`` checked and each listed once (a
    corruption or severity given twice would be counted twice in mPC; the repeat is dropped with
    a warning). ValueError naming the key: unknown names, severities outside 0-5, images or
    num_workers < 0 (images 0: the whole validation split), no corruption or no severity >= 1."""
    corruptions, severities = list(corruptions), list(severities)
    check_corruptions(corruptions, severities)
    problems = [f"robustness.{key}={value}: must be an integer >= 0" for key, value in
                (("images", images), ("num_workers", num_workers))
                if isinstance(value, bool) or not isinstance(value, int) or value < 0]
    if not corruptions:
        problems.append("robustness.corruptions: empty; name at least one")
    if not any(s > 0 for s in severities):
        problems.append(f"robustness.severities={severities}: name at least one of 1-5")
    if problems:
        raise ValueError("; ".join(problems))
    once_c, once_s = list(dict.fromkeys(corruptions)), list(dict.fromkeys(severities))
    if len(once_c) < len(corruptions) or len(once_s) < len(severities):
        log.warning("robustness: each corruption and severity is counted once: %s x %s (given %s x %s)",
                    once_c, once_s, corruptions, severities)
    return once_c, once_s, images


def corruption_seed(seed: int, image_id, corruption: str, severity: int) -> int:
    """uint32 seed of one (image, corruption, severity): CRC-32 of the four values."""
    return zlib.crc32(f"{seed}/{image_id}/{corruption}/{severity}".encode())


def to_rgb(image: Tensor, where: str = "image") -> Tensor:
    """float [C, H, W] with C = 1 (grayscale: repeated), 3, or 4 (RGBA: alpha dropped) -> [3, H, W]."""
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"{where}: expected an image [C, H, W] with 1, 3 or 4 channels, "
                         f"got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        return image.expand(3, -1, -1).contiguous()
    return image[:3]


def corrupt_image(image: Tensor, corruption: str, severity: int, seed: int,
                  where: str = "image") -> Tensor:
    """float [3, H, W] in [0, 1] -> the corrupted float [3, H, W] in [0, 1] (k / 255 values).

    ``seed`` seeds numpy's global generator for the call (its state is restored afterwards).
    Severity 0 returns ``image`` itself. Raises ValueError naming ``where`` for an image too small
    for the corruption."""
    check_corruptions([corruption], [severity])
    image = to_rgb(image, where)
    if severity == 0:
        return image
    h, w = image.shape[-2:]
    if min(h, w) < MIN_SIDE[corruption]:
        raise ValueError(f"{where}: {h}x{w} pixels is too small for {corruption} "
                         f"(imagecorruptions needs at least {MIN_SIDE[corruption]} pixels a side)")
    from experiments.data.corruption_library import load_corruptions

    library = load_corruptions()
    pixels = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        out = library.corrupt(np.ascontiguousarray(pixels), severity=severity, corruption_name=corruption)
    finally:
        np.random.set_state(state)
    if out.shape != pixels.shape:  # imagecorruptions keeps the shape; say so if it ever does not
        raise ValueError(f"{where}: {corruption} returned shape {out.shape} for an image of "
                         f"shape {pixels.shape}")
    return torch.from_numpy(np.array(out, dtype=np.uint8, order="C")).permute(2, 0, 1).float().div_(255.0)


class CorruptedDataset(Dataset):
    """``dataset`` with every image corrupted by ``corruption`` at ``severity`` (0: clean).

    Args:
        dataset: a detbench dataset (image float [C, H, W] in [0, 1], Target).
        corruption: a name in ``CORRUPTIONS``.
        severity: 0 (clean) or 1..5.
        seed: the run's seed; each item's seed is ``corruption_seed(seed, image_id, ...)``.
    """

    def __init__(self, dataset, corruption: str, severity: int, seed: int = 0) -> None:
        check_corruptions([corruption], [severity])
        self.dataset, self.corruption, self.severity, self.seed = dataset, corruption, severity, seed
        self.class_names = dataset.class_names
        self.label_to_category_id = dataset.label_to_category_id

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, target = self.dataset[index]
        image_id = target["image_id"]
        where = f"{type(self.dataset).__name__}[{index}] (image_id {image_id})"
        seed = corruption_seed(self.seed, image_id, self.corruption, self.severity)
        return corrupt_image(image, self.corruption, self.severity, seed, where), target
