"""The plots that explain errors, on fabricated runs whose answers are known by hand: the operating
point (the F1-maximising threshold), the confusion matrix with its background row and column,
LaTeX escaping, and the report's short setting labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.diagnostics import BACKGROUND, confusion
from analysis.errors import classify
from analysis.labels import short_labels
from analysis.latex import escape, to_latex
from analysis.operating_point import operating_point, prf_curve

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]


def _truth(boxes):
    """boxes: (image_id, category_id, [x, y, w, h])."""
    images = [{"id": i, "width": 200, "height": 200} for i in sorted({b[0] for b in boxes})]
    return {"images": images, "categories": CATS,
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for k, (i, c, b) in enumerate(boxes)]}


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_operating_point_is_the_threshold_of_best_f1():
    # 4 objects. Scores 0.9 tp, 0.8 tp, 0.7 fp, 0.6 tp, 0.5 fp, 0.4 fp.
    truth = _truth([(1, 1, [0, 0, 20, 20]), (1, 1, [50, 50, 20, 20]), (2, 1, [0, 0, 20, 20]),
                    (2, 1, [100, 100, 30, 30])])
    dets = [_det(1, 1, [0, 0, 20, 20], 0.9), _det(1, 1, [50, 50, 20, 20], 0.8), _det(1, 1, [150, 150, 10, 10], 0.7),
            _det(2, 1, [0, 0, 20, 20], 0.6), _det(2, 1, [150, 0, 10, 10], 0.5), _det(2, 1, [0, 150, 10, 10], 0.4)]
    curve = prf_curve(*classify(truth, dets))
    # F1 at each threshold: 0.9: 2*1*.25/1.25=.4; 0.8: .667; 0.7: 2*(2/3)(.5)/(7/6)=.571; 0.6: 2*.75*.75/1.5=.75;
    # 0.5: 2*.6*.75/1.35=.667; 0.4: 2*.5*.75/1.25=.6
    assert curve["f1"].round(3).tolist() == [0.4, 0.667, 0.571, 0.75, 0.667, 0.6]
    point = operating_point(truth, dets)
    assert point["threshold"] == pytest.approx(0.6) and point["f1"] == pytest.approx(0.75)
    assert (point["precision"], point["recall"]) == (pytest.approx(0.75), pytest.approx(0.75))
    assert operating_point(truth, [])["threshold"] == 1.0          # nothing detected: nothing kept


def test_confusion_matrix_counts_known_confusions_and_background():
    truth = _truth([(1, 1, [0, 0, 40, 40]), (1, 2, [100, 100, 40, 40]), (1, 3, [0, 100, 40, 40]),
                    (2, 2, [10, 10, 50, 50]), (2, 2, [120, 120, 30, 30])])
    dets = [_det(1, 1, [0, 0, 40, 40], 0.9),          # cat as cat
            _det(1, 1, [100, 100, 40, 40], 0.8),      # dog taken for a cat
            _det(2, 3, [12, 10, 50, 50], 0.7),        # dog taken for a bird
            _det(2, 2, [160, 0, 30, 30], 0.6),        # a dog on nothing
            _det(2, 1, [0, 150, 20, 20], 0.1)]        # below the threshold: not counted
    gt, dt = classify(truth, dets)
    counts = confusion(truth, gt, dt, threshold=0.5)
    assert list(counts.index) == ["cat", "dog", "bird", BACKGROUND] == list(counts.columns)
    expected = pd.DataFrame([[1, 0, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1], [0, 1, 0, 0]],
                            index=counts.index, columns=counts.columns)
    assert (counts.to_numpy() == expected.to_numpy()).all(), counts
    assert counts.to_numpy().sum(axis=1)[:3].tolist() == [1, 3, 1]   # every ground truth counted once


def test_latex_escapes_unicode_and_wraps_wide_text():
    assert escape("Δ AP ± 2 − 1 ≤ 32² _x_ 100%") == r"$\Delta$ AP $\pm$ 2 $-$ 1 $\leq$ 32\textsuperscript{2} " \
                                                    r"\_x\_ 100\%"
    assert escape("naïve → 😀") == r"naive $\rightarrow$ ?"
    shown = pd.DataFrame({"claim": ["a long claim " * 6], "evidence": ["some very long evidence text " * 10],
                          "AP": ["32.0 ± 2.8 [30.1, 33.0]"]})
    tex = to_latex("claims", "Claims", shown)
    assert r"\usepackage{booktabs}" in tex.splitlines()[1] and "p{" in tex and r"\toprule" in tex
    assert all(ord(ch) < 128 for ch in tex)
    long = to_latex("many", "Many rows", pd.DataFrame({"x": np.arange(40)}))
    assert r"\begin{longtable}" in long and r"\endhead" in long


def test_short_labels_keep_the_differing_keys_and_number_long_ones():
    runs = pd.DataFrame({"detector": ["ssd300", "ssd300", "yolov1"], "dataset": ["d"] * 3,
                         "variant": ["detector.model.width=0.5", "detector.model.width=1.0", ""]})
    assert short_labels(runs).tolist() == ["ssd300 width=0.5", "ssd300 width=1.0", "yolov1"]
    runs["variant"] = ["train.lr=0.001 train.iterations=300 detector.model.width=0.5",
                       "train.lr=0.01 train.iterations=300 detector.model.width=0.5", ""]
    assert short_labels(runs).tolist() == ["ssd300 v1", "ssd300 v2", "yolov1"]
