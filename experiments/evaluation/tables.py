"""Flat numpy tables of boxes, and their conversions to and from detbench tensors and COCO JSON.

The evaluator scores tables, never tensors or JSON directly, so that ``evaluate`` (tensors from
a model) and ``detbench-eval`` (any COCO files) run the very same code.

Box formats: ``Target`` / ``Detection`` hold x1 y1 x2 y2 absolute pixels; the tables and COCO
JSON hold COCO's x y w h (pixels, float64). Tables keep the boxes exactly as COCO sees them, so
writing a table out as JSON and scoring that file again gives the same numbers bit for bit.

Every check raises ``ValueError`` naming the offending entry (``detections[3] (image_id 17):
box 5 ...``, ``results[12]: ...``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from detectors.base import Detection, Target


@dataclass
class GroundTruthTable:
    """Every ground-truth object of a split, one row per object (N rows, I images).

    image_ids:    int64 [I], unique, in the order given.
    image_sizes:  int64 [I, 2], (H, W) pixels.
    image_index:  int64 [N], row -> position in ``image_ids``.
    boxes:        float64 [N, 4], COCO x y w h, pixels.
    category_ids: int64 [N], COCO category ids.
    area:         float64 [N], pixels²: what the COCO size buckets use.
    iscrowd:      bool [N], crowd regions (ignored by every metric).
    difficult:    bool [N], Pascal VOC's flag (ignored by the VOC metric only).
    """

    image_ids: np.ndarray
    image_sizes: np.ndarray
    image_index: np.ndarray
    boxes: np.ndarray
    category_ids: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray


@dataclass
class DetectionTable:
    """Every detection of a split, one row per box (K rows), images as in a ``GroundTruthTable``.

    image_index:  int64 [K], row -> position in the ground truth's ``image_ids``.
    boxes:        float64 [K, 4], COCO x y w h, pixels.
    scores:       float64 [K] in [0, 1].
    category_ids: int64 [K], COCO category ids.
    """

    image_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """float64 [N, 4] x1 y1 x2 y2 -> x y w h."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """float64 [N, 4] x y w h -> x1 y1 x2 y2."""
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _raise_first(bad: np.ndarray, message) -> None:
    """Raise ValueError(message(row)) for the first row where ``bad`` holds."""
    if bad.any():
        raise ValueError(message(_first(bad)))


def _check_xywh_scores(boxes: np.ndarray, scores: np.ndarray | None, name, as_given=None) -> None:
    """Check float64 [K, 4] x y w h boxes (finite, w >= 0, h >= 0) and scores in [0, 1].

    ``name(row)`` says which entry a row is; ``as_given(row)`` shows the box as the user wrote
    it (default: x y w h), for the error.
    """
    as_given = as_given or (lambda r: f"x y w h = {boxes[r].tolist()}")
    _raise_first(~np.isfinite(boxes).all(axis=1),
                 lambda r: f"{name(r)} has NaN or infinite coordinates: {as_given(r)}")
    _raise_first((boxes[:, 2] < 0) | (boxes[:, 3] < 0),
                 lambda r: f"{name(r)} is inverted (x2 < x1 or y2 < y1): {as_given(r)}")
    if scores is not None:
        _raise_first(~((scores >= 0) & (scores <= 1)),  # also catches NaN
                     lambda r: f"{name(r)} has score {scores[r]} outside [0, 1]")


def _concat(tensors: list[torch.Tensor], dtype: torch.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not tensors:
        return np.zeros((0, *shape), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    return torch.cat([t.detach().to("cpu", dtype) for t in tensors]).numpy()


def tables_from_tensors(detections: list[Detection], targets: list[Target],
                        image_sizes: list[tuple[int, int]],
                        label_to_category_id: dict[int, int]) -> tuple[GroundTruthTable, DetectionTable]:
    """Check and flatten a split's targets and detections (detections[i] belongs to targets[i]).

    image_sizes: (H, W) per image. label_to_category_id: every known label -> COCO category id.
    Boxes go float32 -> float64 before w = x2 - x1, so both backends see identical numbers.
    """
    if not (len(detections) == len(targets) == len(image_sizes)):
        raise ValueError(f"{len(detections)} detections, {len(targets)} targets and "
                         f"{len(image_sizes)} image sizes: need one of each per image")
    seen: dict[int, int] = {}
    for i, target in enumerate(targets):
        image_id = target.get("image_id")
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
            raise ValueError(f"targets[{i}]: image_id must be an int, got {image_id!r}")
        if image_id in seen:
            raise ValueError(f"targets[{i}]: image_id {image_id} repeats targets[{seen[image_id]}] "
                             "(a DistributedSampler pads ranks with repeated images; drop them)")
        seen[image_id] = i
    image_ids = np.array([t["image_id"] for t in targets], dtype=np.int64)
    try:
        sizes = np.array(image_sizes, dtype=np.int64).reshape(len(targets), 2)
    except (TypeError, ValueError):
        raise ValueError("image_sizes must hold one (H, W) pair of ints per image") from None
    if (sizes <= 0).any():
        i = _first((sizes <= 0).any(axis=1))
        raise ValueError(f"image_sizes[{i}] (image_id {image_ids[i]}): (H, W) = {tuple(sizes[i])} "
                         "must be positive")

    for i, (det, target) in enumerate(zip(detections, targets)):
        where = f"(image_id {image_ids[i]})"
        _check_structure(target, ("boxes", "labels", "area", "iscrowd"), f"targets[{i}] {where}")
        _check_structure(det, ("boxes", "scores", "labels"), f"detections[{i}] {where}")

    labels = np.array(sorted(label_to_category_id), dtype=np.int64)
    size = int(labels.max(initial=0)) + 1
    known = np.zeros(size, dtype=bool)
    known[labels] = True
    lookup = np.zeros(size, dtype=np.int64)  # label -> category id
    lookup[labels] = [label_to_category_id[int(label)] for label in labels]

    def to_category(raw_labels: np.ndarray, name) -> np.ndarray:
        inside = (raw_labels >= 0) & (raw_labels < size)
        ok = inside & known[np.where(inside, raw_labels, 0)]
        _raise_first(~ok, lambda r: f"{name(r)} has label {raw_labels[r]}, not a known class "
                                    f"(labels {labels.tolist()})")
        return lookup[raw_labels]

    gt = GroundTruthTable(
        image_ids=image_ids, image_sizes=sizes,
        image_index=np.repeat(np.arange(len(targets)), [len(t["boxes"]) for t in targets]),
        boxes=_concat([t["boxes"] for t in targets], torch.float64, (4,)),
        category_ids=np.zeros(0, dtype=np.int64),
        area=_concat([t["area"] for t in targets], torch.float64, ()),
        iscrowd=_concat([t["iscrowd"] for t in targets], torch.bool, ()),
        difficult=_concat([t.get("difficult", torch.zeros(len(t["boxes"]), dtype=torch.bool))
                           for t in targets], torch.bool, ()))
    gt_name = _row_namer("targets", gt.image_index, image_ids, "box")
    gt.category_ids = to_category(_concat([t["labels"] for t in targets], torch.int64, ()), gt_name)
    given = gt.boxes
    gt.boxes = xyxy_to_xywh(given)
    _check_xywh_scores(gt.boxes, None, gt_name, lambda r: f"x1 y1 x2 y2 = {given[r].tolist()}")
    _raise_first(~(np.isfinite(gt.area) & (gt.area >= 0)),
                 lambda r: f"{gt_name(r)} has area {gt.area[r]} (must be finite and >= 0)")

    dt = DetectionTable(
        image_index=np.repeat(np.arange(len(detections)), [len(d["boxes"]) for d in detections]),
        boxes=_concat([d["boxes"] for d in detections], torch.float64, (4,)),
        scores=_concat([d["scores"] for d in detections], torch.float64, ()),
        category_ids=np.zeros(0, dtype=np.int64))
    dt_name = _row_namer("detections", dt.image_index, image_ids, "box")
    dt.category_ids = to_category(_concat([d["labels"] for d in detections], torch.int64, ()), dt_name)
    given = dt.boxes
    dt.boxes = xyxy_to_xywh(given)
    _check_xywh_scores(dt.boxes, dt.scores, dt_name, lambda r: f"x1 y1 x2 y2 = {given[r].tolist()}")
    return gt, dt


def _check_structure(item: dict, keys: tuple[str, ...], where: str) -> None:
    """Keys present, boxes [n, 4], every other per-box tensor [n]."""
    for key in keys:
        if key not in item:
            raise ValueError(f"{where}: missing key '{key}'")
    boxes = item["boxes"]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes must be [N, 4], got {list(boxes.shape)}")
    n = boxes.shape[0]
    for key in keys[1:] + (("difficult",) if "difficult" in item else ()):
        if item[key].shape != (n,):
            raise ValueError(f"{where}: {key} must be [{n}] like boxes, got {list(item[key].shape)}")


def _row_namer(kind: str, image_index: np.ndarray, image_ids: np.ndarray, what: str):
    """A function row -> "kind[i] (image_id X): what k" for error messages."""
    def name(row: int) -> str:
        i = int(image_index[row])
        k = row - int(np.searchsorted(image_index, i))  # rows of one image are contiguous
        return f"{kind}[{i}] (image_id {image_ids[i]}): {what} {k}"
    return name


def coco_ground_truth(gt: GroundTruthTable, categories: list[tuple[int, str]]) -> dict:
    """The table as a COCO ground-truth dict (annotation ids 1..N: pycocotools treats id 0 as
    'unmatched'). ``difficult`` is kept as an extra annotation field, which COCO tools ignore."""
    images = [{"id": i, "height": h, "width": w}
              for i, (h, w) in zip(gt.image_ids.tolist(), gt.image_sizes.tolist())]
    annotations = [
        {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": int(z),
         "difficult": int(d)}
        for n, (i, c, b, a, z, d) in enumerate(zip(
            gt.image_ids[gt.image_index].tolist(), gt.category_ids.tolist(), gt.boxes.tolist(),
            gt.area.tolist(), gt.iscrowd.tolist(), gt.difficult.tolist()))]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": name} for c, name in sorted(categories)]}


def coco_results(dt: DetectionTable, image_ids: np.ndarray) -> list[dict]:
    """The table in COCO results form: image_id, category_id, bbox (x y w h), score."""
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image_ids[dt.image_index].tolist(), dt.category_ids.tolist(),
                                  dt.boxes.tolist(), dt.scores.tolist())]


def _image_id(value, where: str) -> int:
    """A COCO image id as int: an int, or a string of one ("17", as some exporters write them:
    the same image in either file). Anything else is a ValueError naming the entry."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{where}: image id {value!r} is not an integer (COCO image ids are integers; "
                     "a string is read when it holds one, e.g. \"17\")")


def tables_from_coco(gt_json: dict, results: list[dict]) -> tuple[GroundTruthTable, DetectionTable,
                                                                  list[tuple[int, str]]]:
    """Check and flatten a COCO ground-truth dict and a COCO results list (``detbench-eval``).

    Returns the tables and the categories as (category id, name), sorted by id. Annotations and
    results keep their order (pycocotools breaks IoU ties by it).
    """
    for key in ("images", "annotations", "categories"):
        if key not in gt_json:
            raise ValueError(f"ground truth: missing '{key}'")
    categories = sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in gt_json["categories"])
    known_categories = {c for c, _ in categories}
    image_ids = np.array([_image_id(im.get("id"), f"ground truth images[{k}]")
                          for k, im in enumerate(gt_json["images"])], dtype=np.int64)
    position = {image_id: i for i, image_id in enumerate(image_ids.tolist())}
    if len(position) != len(image_ids):
        raise ValueError("ground truth: repeated image ids")
    sizes = np.array([(int(im.get("height", 0)), int(im.get("width", 0))) for im in gt_json["images"]],
                     dtype=np.int64).reshape(-1, 2)

    def image_positions(entries: list[dict], kind: str) -> np.ndarray:
        out = np.empty(len(entries), dtype=np.int64)
        for n, entry in enumerate(entries):
            for key in ("image_id", "category_id", "bbox"):
                if key not in entry:
                    raise ValueError(f"{kind}[{n}]: missing '{key}'")
            image_id = _image_id(entry["image_id"], f"{kind}[{n}]")
            if image_id not in position:
                raise ValueError(f"{kind}[{n}]: image_id {entry['image_id']!r} is not in the ground truth "
                                 f"(its ids: {sorted(position)[:5]}{' ...' if len(position) > 5 else ''})")
            if entry["category_id"] not in known_categories:
                raise ValueError(f"{kind}[{n}]: category_id {entry['category_id']} is not a ground-truth "
                                 f"category ({sorted(known_categories)})")
            out[n] = position[image_id]
        return out

    def boxes_of(entries: list[dict], kind: str) -> np.ndarray:
        try:
            boxes = np.array([e["bbox"] for e in entries], dtype=np.float64).reshape(len(entries), 4)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{kind}: every bbox must be 4 numbers [x, y, w, h] ({error})") from None
        _check_xywh_scores(boxes, None, lambda r: f"{kind}[{r}]: bbox")
        return boxes

    anns = gt_json["annotations"]
    gt = GroundTruthTable(
        image_ids=image_ids, image_sizes=sizes, image_index=image_positions(anns, "annotations"),
        boxes=boxes_of(anns, "annotations"),
        category_ids=np.array([a["category_id"] for a in anns], dtype=np.int64),
        area=np.array([a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns],
                      dtype=np.float64),
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        difficult=np.array([bool(a.get("difficult", 0)) for a in anns], dtype=bool))
    if not isinstance(results, list):
        raise ValueError("results: must be a JSON list of {image_id, category_id, bbox, score}")
    for n, r in enumerate(results):
        if "score" not in r:
            raise ValueError(f"results[{n}]: missing 'score'")
    dt = DetectionTable(
        image_index=image_positions(results, "results"), boxes=boxes_of(results, "results"),
        scores=np.array([r["score"] for r in results], dtype=np.float64),
        category_ids=np.array([r["category_id"] for r in results], dtype=np.int64))
    _check_xywh_scores(dt.boxes, dt.scores, lambda r: f"results[{r}]")
    return gt, dt, categories
