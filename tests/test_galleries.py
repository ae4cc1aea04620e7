"""The example galleries choose images by error, on fabricated run folders: the failure gallery
takes the most-missed and the most-false-positive images in turn, and "found by A, missed by B"
lists the smallest objects first."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.image import imsave

from analysis import galleries

# image id -> ground-truth boxes [x, y, w, h] in a 100 x 100 image
BOXES = {1: [[5, 5, 40, 40]], 2: [[60, 60, 8, 8], [5, 5, 30, 30]], 3: [[50, 10, 12, 12]], 4: [[10, 50, 20, 20]]}


def _run(folder, found: set[tuple[int, int]], false_on: dict[int, int]):
    """A run folder whose detections hit the ground truths ``found`` ((image id, box index)) exactly
    and put ``false_on[image]`` detections on empty background."""
    (folder / "samples").mkdir(parents=True)
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in BOXES]
    anns = [{"id": 10 * i + k, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, boxes in BOXES.items() for k, b in enumerate(boxes)]
    (folder / "ground_truth.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    dets = [{"image_id": i, "category_id": 1, "bbox": BOXES[i][k], "score": 0.9} for i, k in sorted(found)]
    dets += [{"image_id": i, "category_id": 1, "bbox": [80 + j, 85, 6, 6], "score": 0.95}
             for i, n in false_on.items() for j in range(n)]
    (folder / "detections.json").write_text(json.dumps(dets))
    for i in BOXES:
        imsave(folder / "samples" / f"{i}.png", np.full((100, 100, 3), 0.5))
    return folder


def test_worst_images_alternate_most_missed_and_most_false():
    counts = pd.DataFrame({"missed": [3, 0, 1, 2], "false": [0, 4, 1, 0]}, index=["a", "b", "c", "d"])
    assert galleries.worst_images(counts, 3) == ["a", "b", "d"]
    assert galleries.worst_images(counts, 10) == ["a", "b", "d", "c"]


def test_error_counts_of_a_fabricated_run(tmp_path):
    run = _run(tmp_path / "a", found={(1, 0), (2, 1)}, false_on={1: 3})
    _, gt, kept, _ = galleries.at_operating_point(run)
    counts = galleries.error_counts(gt, kept, galleries.sample_ids(run))
    assert counts.loc["2", "missed"] == 1 and counts.loc["3", "missed"] == 1 and counts.loc["4", "missed"] == 1
    assert counts.loc["1", "missed"] == 0 and counts.loc["1", "false"] == 3
    assert galleries.worst_images(counts, 2) == ["2", "1"], "a most-missed image, then the most-false one"
    paths = galleries.plot_failures({"A": run}, tmp_path / "plots", per_detector=2)
    assert paths and paths[0].is_file()


def test_found_by_one_missed_by_another_smallest_first(tmp_path):
    a = _run(tmp_path / "a", found={(1, 0), (2, 0), (2, 1), (3, 0), (4, 0)}, false_on={})
    b = _run(tmp_path / "b", found={(1, 0), (2, 1)}, false_on={})
    cases = galleries.found_missed({"A": a, "B": b}, limit=6)
    assert [(c["a"], c["b"]) for c in cases] == [("A", "B")] * 3
    assert [c["area"] for c in cases] == [64.0, 144.0, 400.0], "smallest objects first"
    assert [c["image_id"] for c in cases] == ["2", "3", "4"]
    paths = galleries.plot_found_missed({"A": a, "B": b}, tmp_path / "plots")
    assert paths and paths[0].is_file()
