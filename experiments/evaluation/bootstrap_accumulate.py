"""Re-accumulate matched detections (``bootstrap_match``) for many image multisets at once.

A replicate is a weight per image: how many times the image is in the multiset (the identity
replicate is all ones). A dataset holding image i w_i times, each copy renumbered and the copies
kept together in image order, gives COCOeval.accumulate (and the devkit) the same cumulative
true / false positive counts after every detection as the weighted sums here; the points a
copy adds in between are dominated (their recall and precision are matched or beaten by the last
copy's), so the interpolated precision, AP and recall are exactly pycocotools' (up to the order
of float summation, < 1e-12). One limit, stated: when two detections of one image and class
tie on score and differ in outcome, a duplicated image orders them copy by copy here, image by
image in COCOeval; the identity replicate is never affected.

Per class and per chunk of replicates, everything is a numpy array op on [b, A*T, points]:
points are the true positives of each (area range, IoU threshold), where the precision envelope
can change. With R = 101 recall thresholds, COCOeval's interpolated precision summed over the
thresholds is sum_m env_m * (j_m - j_(m-1)), j_m the number of thresholds <= recall_m and env_m
the best precision from point m on.
"""
from __future__ import annotations

import numpy as np

from experiments.evaluation.bootstrap_match import CocoMatches, VocMatches
from experiments.evaluation.coco_backends import RECALL_THRESHOLDS

VOC07_THRESHOLDS = np.arange(0.0, 1.1, 0.1)  # the devkit's 0:0.1:1
EPS = np.spacing(1)


def _thresholds_reached(recall: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of thresholds <= recall, elementwise (exact float comparisons)."""
    return np.searchsorted(thresholds, recall.ravel(), side="right").reshape(recall.shape)


def _envelope_sum(precision: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """sum_m env_m * (j_m - j_(m-1)) along the last axis; env = best precision from m on."""
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, -1), axis=-1), -1)
    steps = np.diff(reached, axis=-1, prepend=0)
    return np.sum(envelope * steps, axis=-1)


class CocoAccumulator:
    """COCO's 12 numbers per replicate from ``CocoMatches``: ``__call__(weights [b, I])``."""

    def __init__(self, matches: CocoMatches):
        self.m = matches
        num_areas, num_thr = matches.matched.shape[:2]
        self.num_areas, self.num_thr = num_areas, num_thr
        self.classes = [self._prepare(k) for k in range(len(matches.category_ids))]

    def _prepare(self, k: int) -> dict:
        """Index arrays of class k: true-positive points per (a, t) padded to [Q, n], and the
        sparse corrections Y that turn 'in-range detections so far' into 'counted so far'."""
        m = self.m
        lo, hi = m.class_start[k], m.class_start[k + 1]
        if hi == lo:
            return {"image": m.image[lo:hi]}  # no detection: AP 0 and recall 0 where defined
        in_range = m.in_range[:, lo:hi]
        q = self.num_areas * self.num_thr
        tp = m.true_positive[:, :, lo:hi].reshape(q, hi - lo)  # [Q, D_k]
        matched = m.matched[:, :, lo:hi].reshape(q, hi - lo)
        area_of_q = np.repeat(np.arange(self.num_areas), self.num_thr)
        wide_range = in_range[area_of_q]  # [Q, D_k]
        # counted(p) = in_range(p) + (tp & ~in_range)(p) - (matched & ~tp & in_range)(p)
        plus, minus = tp & ~wide_range, matched & ~tp & wide_range
        points = [np.flatnonzero(row) for row in tp]
        fixes = [np.flatnonzero(p | n) for p, n in zip(plus, minus)]
        n_pts = max(1, max(len(p) for p in points))
        n_fix = max(1, max(len(f) for f in fixes))
        pos = np.zeros((q, n_pts), dtype=np.int64)
        mask = np.zeros((q, n_pts), dtype=bool)
        fix_pos = np.zeros((q, n_fix), dtype=np.int64)
        fix_sign = np.zeros((q, n_fix), dtype=np.float32)
        fix_index = np.zeros((q, n_pts), dtype=np.int64)
        for i, (p, f) in enumerate(zip(points, fixes)):
            pos[i, :len(p)], mask[i, :len(p)] = p, True
            fix_pos[i, :len(f)] = f
            fix_sign[i, :len(f)] = np.where(plus[i, f], 1.0, -1.0)
            fix_index[i, :len(p)] = np.searchsorted(f, p, side="right")
        rank = m.rank[lo:hi][pos]
        return {"image": m.image[lo:hi], "in_range": in_range.astype(np.float32), "pos": pos, "mask": mask,
                "area_of_q": area_of_q, "fix_pos": fix_pos, "fix_sign": fix_sign, "fix_index": fix_index,
                "top1": mask & (rank < 1), "top10": mask & (rank < 10)}

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights float [b, I] (copies of each image) -> COCO_METRICS name -> float64 [b], NaN
        where undefined (no object in any class of that area range)."""
        m, b = self.m, len(weights)
        num_cats, num_areas, num_thr = len(m.category_ids), self.num_areas, self.num_thr
        num_rec = len(RECALL_THRESHOLDS)
        weights32 = weights.astype(np.float32)
        objects = (weights.astype(np.float64) @ m.num_objects.reshape(len(m.image_ids), -1)).reshape(
            b, num_cats, num_areas)  # [b, K, A] non-ignored objects per replicate
        precision_sum = np.zeros((b, num_cats, num_areas, num_thr))
        recall = np.zeros((b, num_cats, num_areas, num_thr, 3))  # maxDets 1, 10, 100
        for k, c in enumerate(self.classes):
            if len(c["image"]) == 0:
                continue
            w = weights32[:, c["image"]]  # [b, D_k]
            in_range_so_far = np.cumsum(w[:, None, :] * c["in_range"][None], axis=2)  # [b, A, D_k]
            w_pts = w[:, c["pos"]] * c["mask"]  # [b, Q, n]
            tp = np.cumsum(w_pts, axis=-1)
            fixes = np.cumsum(w[:, c["fix_pos"]] * c["fix_sign"], axis=-1)
            fixes = np.concatenate([np.zeros((b, fixes.shape[1], 1), np.float32), fixes], axis=-1)
            counted = in_range_so_far[:, c["area_of_q"][:, None], c["pos"]] \
                + np.take_along_axis(fixes, np.broadcast_to(c["fix_index"], (b, *c["fix_index"].shape)), -1)
            tp, counted = tp.astype(np.float64), counted.astype(np.float64)
            npig = objects[:, k, c["area_of_q"]][..., None]  # [b, Q, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                rc = tp / npig
                pr = np.where(c["mask"], tp / (counted + EPS), 0.0)
                reached = _thresholds_reached(np.where(npig > 0, rc, 0.0), RECALL_THRESHOLDS)
                sums = _envelope_sum(pr, reached)  # [b, Q]
                rec = np.stack([np.sum(w_pts * c["top1"], -1), np.sum(w_pts * c["top10"], -1), tp[..., -1]],
                               axis=-1) / npig
            precision_sum[:, k] = sums.reshape(b, num_areas, num_thr)
            recall[:, k] = rec.reshape(b, num_areas, num_thr, 3)
        defined = objects > 0  # [b, K, A]
        num_defined = defined.sum(axis=1)  # [b, A]
        precision_sum = np.where(defined[..., None], precision_sum, 0.0)
        recall = np.where(defined[..., None, None], np.nan_to_num(recall), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ap = precision_sum.sum(axis=(1, 3)) / (num_defined * num_thr * num_rec)  # [b, A]
            ap50 = precision_sum[..., 0, 0].sum(axis=1) / (num_defined[:, 0] * num_rec)
            ap75 = precision_sum[..., 0, 5].sum(axis=1) / (num_defined[:, 0] * num_rec)
            ar = recall.sum(axis=(1, 3)) / (num_defined[..., None] * num_thr)  # [b, A, 3]
        ap, ap50, ap75, ar = (np.where(np.isfinite(x), x, np.nan) for x in (ap, ap50, ap75, ar))
        return {"map": ap[:, 0], "map_50": ap50, "map_75": ap75, "map_small": ap[:, 1],
                "map_medium": ap[:, 2], "map_large": ap[:, 3], "mar_1": ar[:, 0, 0], "mar_10": ar[:, 0, 1],
                "mar_100": ar[:, 0, 2], "mar_small": ar[:, 1, 2], "mar_medium": ar[:, 2, 2],
                "mar_large": ar[:, 3, 2]}


class VocAccumulator:
    """VOC07 (11-point) and VOC2010+ (area) mAP per replicate from ``VocMatches``."""

    def __init__(self, matches: VocMatches):
        self.m = matches

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights float [b, I] -> {"voc07_map", "voc_map"}: float64 [b], mean over classes with positives."""
        m, b = self.m, len(weights)
        num_cats = len(m.category_ids)
        positives = weights.astype(np.float64) @ m.num_objects  # [b, K]
        ap07, ap = np.full((b, num_cats), np.nan), np.full((b, num_cats), np.nan)
        weights32 = weights.astype(np.float32)
        for k in range(num_cats):
            lo, hi = m.class_start[k], m.class_start[k + 1]
            points = np.flatnonzero(m.true_positive[lo:hi])
            w = weights32[:, m.image[lo:hi]]
            counted = np.cumsum(w * m.counted[lo:hi], axis=1)[:, points].astype(np.float64)  # [b, n]
            tp = np.cumsum(w[:, points], axis=1).astype(np.float64)
            npos = positives[:, k:k + 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                rc = np.where(npos > 0, tp / npos, 0.0)
                pr = np.where(counted > 0, tp / counted, 0.0)
            ap07[:, k] = _envelope_sum(pr, _thresholds_reached(rc, VOC07_THRESHOLDS)) / 11.0
            envelope = np.flip(np.maximum.accumulate(np.flip(pr, -1), axis=-1), -1)
            ap[:, k] = np.sum(np.diff(rc, axis=1, prepend=0.0) * envelope, axis=1)
            undefined = positives[:, k] == 0
            ap07[undefined, k], ap[undefined, k] = np.nan, np.nan
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no positive at all: NaN
                return {"voc07_map": np.nanmean(ap07, axis=1), "voc_map": np.nanmean(ap, axis=1)}
