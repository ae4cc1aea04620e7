"""What every detbench dataset is: (image float[3, H, W] in [0, 1], Target) pairs, class names,
the label -> category-id map, and a log of what was skipped or changed and why."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor
from torch.utils.data import Dataset

from detectors.base import Target

log = logging.getLogger(__name__)


@dataclass
class SkipLog:
    """Counts and logs every box or image a loader dropped, clipped or skipped.

    ``counts`` maps a reason ("zero_area", "outside_image", "unknown_class", ...) to how many
    boxes (or images, for reasons starting with "image_") it concerned; ``examples`` keeps the
    first few (file, detail) pairs per reason so that ``detbench-dataset`` can show them;
    ``unknown_classes`` counts the boxes of each class name outside the class list (all of them,
    so an error can list every class the annotations hold).
    """

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5
    unknown_classes: Counter = field(default_factory=Counter)

    def add(self, reason: str, where: str, detail: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(f"{where}: {detail}" if detail else where)
        log.debug("%s: %s %s", where, reason, detail)

    def log_summary(self, what: str) -> None:
        """One line per reason (count and first example), instead of one warning per box."""
        for reason, n in sorted(self.counts.items()):
            log.warning("%s: %d x %s (e.g. %s)", what, n, reason, self.examples[reason][0])

    def total(self, prefix: str = "") -> int:
        return sum(v for k, v in self.counts.items() if k.startswith(prefix))


class DetectionDataset(Dataset):
    """Base of all datasets. Subclasses fill ``class_names`` (index i is label i + 1),
    ``label_to_category_id`` (identity unless the format has its own ids, as COCO does) and
    implement ``__len__`` and ``__getitem__`` -> (image float32 [3, H, W] in [0, 1], Target).

    ``transforms``, when given, is called as ``transforms(image, target) -> (image, target)``
    after loading (augmentation policies from ``experiments.data.transforms``).
    """

    class_names: list[str]
    label_to_category_id: dict[int, int]

    def __init__(self) -> None:
        self.skips = SkipLog()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        raise NotImplementedError
