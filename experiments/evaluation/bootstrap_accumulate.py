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

Per class and per chunk of replicates, everything is a numpy array op on [b, points]: points
are the true positives of each (area range, IoU threshold), where the precision envelope can
change. With R = 101 recall thresholds, COCOeval's interpolated precision summed over the
thresholds is sum_m env_m * (j_m - j_(m-1)), j_m the number of thresholds <= recall_m and env_m
the best precision from point m on.
"""
from __future__ import annotations

import warnings

import numpy as np

from experiments.evaluation.bootstrap_match import CocoMatches, VocMatches
from experiments.evaluation.coco_backends import RECALL_THRESHOLDS

VOC07_THRESHOLDS = np.arange(0.0, 1.1, 0.1)  # the devkit's 0:0.1:1
EPS = np.spacing(1)


def running_sum(x: np.ndarray, block: int = 64) -> np.ndarray:
    """np.cumsum(x, axis=0) for float32 [n, b] holding integers (exact below 2**24), by blocks:
    a lower-triangular matmul within each block of rows, then the block totals' running sum."""
    n = len(x)
    if n <= block:
        return np.cumsum(x, axis=0)
    pad = (-n) % block
    blocks = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(-1, block, x.shape[1])
    inner = np.matmul(np.tril(np.ones((block, block), x.dtype)), blocks)
    totals = inner[:, -1]
    inner += (np.cumsum(totals, axis=0) - totals)[:, None]
    return inner.reshape(-1, x.shape[1])[:n]


class SumsUpTo:
    """Sum of weights over ``rows`` (sorted) up to each of ``positions`` (sorted, unique):
    segment sums by reduceat, then a running sum over the few segments."""

    def __init__(self, rows: np.ndarray, positions: np.ndarray):
        counts = np.searchsorted(rows, positions, side="right")
        starts = np.r_[0, counts[:-1]]
        self.nonempty = np.flatnonzero(counts > starts)
        self.rows = rows[:counts[-1] if len(counts) else 0]
        self.starts, self.size = starts[self.nonempty], len(positions)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """w float32 [D, b] -> [len(positions), b]."""
        out = np.zeros((self.size, w.shape[1]), w.dtype)
        if len(self.nonempty):
            out[self.nonempty] = np.add.reduceat(w[self.rows], self.starts, axis=0)
        return np.cumsum(out, axis=0)


def thresholds_reached(recall: np.ndarray, thresholds: np.ndarray, steps: int) -> np.ndarray:
    """Number of ``thresholds`` <= recall, elementwise, for thresholds ~ i / steps (i = 0..steps):
    floor(recall * steps) of them certainly are; the next two are compared exactly."""
    base = np.clip(np.floor(recall * steps), 0, steps).astype(np.int64)
    padded = np.r_[thresholds, np.inf, np.inf]
    return base + (padded[base] <= recall) + (padded[base + 1] <= recall)


class CocoAccumulator:
    """COCO's 12 numbers per replicate from ``CocoMatches``: ``__call__(weights [b, I])``.

    Per class, the true-positive points of all Q = A * T (area range, IoU threshold) groups lie
    in one flat list [P]; sums within a group are differences of one cumulative sum (exact:
    integer counts in float32 stay below 2**24), and the best precision from a point on is a
    reverse running maximum over the list with 2 * (Q - 1 - q) added to group q, so no maximum
    leaks across groups (the shift costs at most 1.5e-14 of precision).
    """

    def __init__(self, matches: CocoMatches):
        self.m = matches
        self.num_areas, self.num_thr = matches.matched.shape[:2]
        self.classes = [self._prepare(k) for k in range(len(matches.category_ids))]

    def _prepare(self, k: int) -> dict | None:
        m = self.m
        lo, hi = m.class_start[k], m.class_start[k + 1]
        num_q = self.num_areas * self.num_thr
        tp = m.true_positive[:, :, lo:hi].reshape(num_q, hi - lo)  # [Q, D_k]
        if not tp.any():
            return None  # no true positive: AP 0 and recall 0 wherever defined
        in_range = m.in_range[:, lo:hi]
        matched = m.matched[:, :, lo:hi].reshape(num_q, hi - lo)
        area_of_q = np.repeat(np.arange(self.num_areas), self.num_thr)
        wide_range = in_range[area_of_q]  # [Q, D_k]
        # counted so far = in range so far + (tp & ~in_range) so far - (matched & ~tp & in_range) so far
        plus, minus = tp & ~wide_range, matched & ~tp & wide_range
        tp_any = tp.reshape(self.num_areas, self.num_thr, -1).any(axis=1)  # [A, D_k]
        in_sums = [SumsUpTo(np.flatnonzero(in_range[a]), np.flatnonzero(tp_any[a])) for a in range(self.num_areas)]
        in_base = np.cumsum([0] + [s.size for s in in_sums])[:-1]  # offsets in the concatenated sums
        point_rows = [np.flatnonzero(tp_any[a]) for a in range(self.num_areas)]
        points, groups, in_index, fix_rows, fix_sign, fix_index = [], [], [], [], [], []
        fix_base = 0
        for q in range(num_q):
            p = np.flatnonzero(tp[q])
            f = np.flatnonzero(plus[q] | minus[q])
            points.append(p)
            groups.append(np.full(len(p), q))
            in_index.append(in_base[area_of_q[q]] + np.searchsorted(point_rows[area_of_q[q]], p))
            fix_rows.append(f)
            fix_sign.append(np.where(plus[q, f], 1.0, -1.0))
            fix_index.append(np.stack([np.full(len(p), fix_base), fix_base + np.searchsorted(f, p, side="right")]))
            fix_base += len(f)
        pos, group = np.concatenate(points), np.concatenate(groups)
        counts = np.array([len(p) for p in points])
        nonempty = np.flatnonzero(counts)
        starts = (np.cumsum(counts) - counts)[nonempty]
        rank = m.rank[lo:hi][pos]
        return {"image": m.image[lo:hi], "in_sums": in_sums, "pos": pos, "group": group,
                "area_of_point": area_of_q[group], "in_index": np.concatenate(in_index),
                "fix_rows": np.concatenate(fix_rows), "fix_sign": np.concatenate(fix_sign).astype(np.float32),
                "fix_index": np.concatenate(fix_index, axis=1), "nonempty": nonempty, "starts": starts,
                "group_start": np.repeat(starts, counts[nonempty]), "first": np.isin(np.arange(len(pos)), starts),
                "shift": 2.0 * (num_q - 1 - group), "top1": (rank < 1).astype(np.float32),
                "top10": (rank < 10).astype(np.float32)}

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights float [b, I] (copies of each image) -> COCO_METRICS name -> float64 [b], NaN
        where undefined (no object in any class of that area range). Arrays are laid out
        [points, b] so that gathers copy rows and running sums add rows."""
        m, b = self.m, len(weights)
        num_cats, num_areas, num_thr = len(m.category_ids), self.num_areas, self.num_thr
        num_rec, num_q = len(RECALL_THRESHOLDS), num_areas * num_thr
        w_images = np.ascontiguousarray(weights.T, dtype=np.float32)  # [I, b]
        objects = (m.num_objects.reshape(len(m.image_ids), -1).T.astype(np.float64) @ weights.T.astype(np.float64)
                   ).reshape(num_cats, num_areas, b)  # [K, A, b] non-ignored objects per replicate
        precision_sum = np.zeros((num_cats, num_q, b))
        recall = np.zeros((num_cats, num_q, 3, b))  # maxDets 1, 10, 100
        zero = np.zeros((1, b), np.float32)
        for k, c in enumerate(self.classes):
            if c is None:
                continue
            w = w_images[c["image"]]  # [D_k, b]
            in_so_far = np.concatenate([sums(w) for sums in c["in_sums"]])
            fixes = np.concatenate([zero, np.cumsum(w[c["fix_rows"]] * c["fix_sign"][:, None], axis=0)])
            w_pts = w[c["pos"]]  # [P, b]
            tp_so_far = np.concatenate([zero, running_sum(w_pts)])
            tp = (tp_so_far[1:] - tp_so_far[c["group_start"]]).astype(np.float64)
            counted = (in_so_far[c["in_index"]] + fixes[c["fix_index"][1]]
                       - fixes[c["fix_index"][0]]).astype(np.float64)
            npig = objects[k][c["area_of_point"]]  # [P, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                rc = np.where(npig > 0, tp / npig, 0.0)
                pr = tp / (counted + EPS)
            reached = thresholds_reached(rc, RECALL_THRESHOLDS, 100)
            steps = np.where(c["first"][:, None], reached, np.diff(reached, axis=0, prepend=0))
            shift = c["shift"][:, None]
            envelope = np.flip(np.maximum.accumulate(np.flip(pr + shift, 0), axis=0), 0) - shift
            precision_sum[k, c["nonempty"]] = np.add.reduceat(envelope * steps, c["starts"], axis=0)
            ends = np.r_[c["starts"][1:], len(c["pos"])]
            found = np.stack([np.add.reduceat(w_pts * c["top1"][:, None], c["starts"], axis=0),
                              np.add.reduceat(w_pts * c["top10"][:, None], c["starts"], axis=0),
                              tp_so_far[ends] - tp_so_far[c["starts"]]], axis=1)  # [G, 3, b]
            area = np.repeat(np.arange(num_areas), num_thr)[c["nonempty"]]
            with np.errstate(divide="ignore", invalid="ignore"):
                recall[k, c["nonempty"]] = found / objects[k][area][:, None]
        precision_sum, recall = precision_sum.transpose(2, 0, 1), recall.transpose(3, 0, 1, 2)
        objects = objects.transpose(2, 0, 1)
        precision_sum = precision_sum.reshape(b, num_cats, num_areas, num_thr)
        recall = recall.reshape(b, num_cats, num_areas, num_thr, 3)
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
        self.points = [np.flatnonzero(matches.true_positive[lo:hi])
                       for lo, hi in zip(matches.class_start[:-1], matches.class_start[1:])]
        self.counted = [SumsUpTo(np.flatnonzero(matches.counted[lo:hi]), points)
                        for lo, hi, points in zip(matches.class_start[:-1], matches.class_start[1:], self.points)]

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """weights float [b, I] -> {"voc07_map", "voc_map"}: float64 [b], mean over classes with positives."""
        m, b = self.m, len(weights)
        num_cats = len(m.category_ids)
        positives = m.num_objects.T.astype(np.float64) @ weights.T.astype(np.float64)  # [K, b]
        ap07, ap = np.full((num_cats, b), np.nan), np.full((num_cats, b), np.nan)
        w_images = np.ascontiguousarray(weights.T, dtype=np.float32)  # [I, b]
        for k, points in enumerate(self.points):
            lo, hi = m.class_start[k], m.class_start[k + 1]
            w = w_images[m.image[lo:hi]]  # [D_k, b]
            counted = self.counted[k](w).astype(np.float64)  # [n, b]
            tp = running_sum(w[points]).astype(np.float64)
            npos = positives[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                rc = np.where(npos > 0, tp / npos, 0.0)
                pr = np.where(counted > 0, tp / counted, 0.0)
            envelope = np.flip(np.maximum.accumulate(np.flip(pr, 0), axis=0), 0)
            steps = np.diff(thresholds_reached(rc, VOC07_THRESHOLDS, 10), axis=0, prepend=0)
            ap07[k] = np.sum(envelope * steps, axis=0) / 11.0
            ap[k] = np.sum(np.diff(rc, axis=0, prepend=0.0) * envelope, axis=0)
            ap07[k, npos == 0], ap[k, npos == 0] = np.nan, np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no positive at all: NaN
            return {"voc07_map": np.nanmean(ap07, axis=0), "voc_map": np.nanmean(ap, axis=0)}
