"""YOLO v1's S x S grid: the output layout, objects to cells, predictions to boxes.

Output layout (ours; darknet stores the same numbers grouped by kind instead of by cell):
the network gives ``[N, S, S, B * 5 + C]``, row-major cells (row i = y, column j = x), and in
each cell B predictors of 5 numbers then C class scores::

    [x_1, y_1, sqrt_w_1, sqrt_h_1, conf_1, ..., x_B, y_B, sqrt_w_B, sqrt_h_B, conf_B, p_1 .. p_C]

- x, y: the box centre relative to the cell's top-left corner, in cell units ([0, 1] inside);
- sqrt_w, sqrt_h: the square roots of the box width and height relative to the image (the
  paper predicts sqrt(w), sqrt(h) so that an error on a small box costs more than on a large
  one); the box is ``w = sqrt_w ** 2``;
- conf: Pr(object) * IoU(pred, truth), the box's confidence;
- p_c: Pr(class c | object), one set per cell, shared by its B predictors.

All coordinates here are normalised to the network input: (0, 0) top-left, (1, 1) bottom-right.
Every output is linear (no sigmoid/softmax), as in the paper.
"""
from __future__ import annotations

import torch
from torch import Tensor


def split_outputs(outputs: Tensor, boxes_per_cell: int) -> tuple[Tensor, Tensor, Tensor]:
    """outputs [N, S, S, B*5+C] -> (box params [N, S, S, B, 4] as x, y, sqrt_w, sqrt_h;
    confidences [N, S, S, B]; class scores [N, S, S, C])."""
    n, s, _, _ = outputs.shape
    per_box = outputs[..., : boxes_per_cell * 5].reshape(n, s, s, boxes_per_cell, 5)
    return per_box[..., :4], per_box[..., 4], outputs[..., boxes_per_cell * 5:]


def cell_offsets(grid_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(columns, rows), each [S, S, 1]: the cell's j and i, broadcastable over B predictors."""
    index = torch.arange(grid_size, device=device, dtype=torch.float32)
    rows, cols = torch.meshgrid(index, index, indexing="ij")  # [S, S] each
    return cols[..., None], rows[..., None]


def params_to_boxes(params: Tensor, cols: Tensor, rows: Tensor, grid_size: int) -> Tensor:
    """Box params [..., 4] (x, y, sqrt_w, sqrt_h) of cells at ``cols``/``rows`` (broadcast to
    params[..., 0]) -> boxes [..., 4] x1 y1 x2 y2 normalised to the input."""
    cx = (cols + params[..., 0]) / grid_size
    cy = (rows + params[..., 1]) / grid_size
    w, h = params[..., 2] ** 2, params[..., 3] ** 2
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def decode_boxes(outputs: Tensor, boxes_per_cell: int) -> tuple[Tensor, Tensor, Tensor]:
    """outputs [N, S, S, B*5+C] -> (boxes [N, S*S*B, 4] x1 y1 x2 y2 normalised,
    confidences [N, S*S*B], class scores [N, S*S*B, C], each predictor with its cell's)."""
    n, s = outputs.shape[:2]
    params, confidence, class_scores = split_outputs(outputs, boxes_per_cell)
    cols, rows = cell_offsets(s, outputs.device)
    boxes = params_to_boxes(params, cols, rows, s)  # [N, S, S, B, 4]
    class_scores = class_scores[:, :, :, None, :].expand(-1, -1, -1, boxes_per_cell, -1)
    return (boxes.reshape(n, -1, 4), confidence.reshape(n, -1),
            class_scores.reshape(n, s * s * boxes_per_cell, -1))


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1[..., 4] with boxes2[..., 4] pairwise-aligned (broadcast), x1 y1 x2 y2.
    (torchvision's box_iou gives the all-pairs matrix; here each box meets one partner.)"""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    return inter / (area1 + area2 - inter).clamp(min=1e-12)


def assign_objects_to_cells(boxes: list[Tensor], labels: list[Tensor], grid_size: int
                            ) -> dict[str, Tensor]:
    """Give every cell that holds an object's centre its one object.

    boxes: per image, float [n_i, 4] x1 y1 x2 y2 normalised to the input; labels: int64 [n_i].
    A cell has one set of class probabilities, so it learns one object: when several centres
    fall in one cell, the cell learns the **largest** (by area; ties: the first listed) and the
    others are not learned at all (darknet keeps the first of a shuffled list instead, i.e. a
    random one; we prefer a rule a test can state).

    Returns, for the K cells with an object: ``image``, ``row``, ``col`` (int64 [K]),
    ``box`` (float [K, 4] x1 y1 x2 y2 normalised), ``target`` (float [K, 4]: x, y in the cell,
    sqrt(w), sqrt(h): what the responsible predictor should output) and ``label`` (int64 [K]);
    and per object of the M given (all images, in order): ``object_cell`` (int64 [M], its flat
    cell (image * S + row) * S + col) and ``object_learned`` (bool [M], it won its cell).
    """
    device = boxes[0].device if boxes else torch.device("cpu")
    image = torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=device)
                       for i, b in enumerate(boxes)]) if boxes else torch.zeros(0, dtype=torch.int64)
    all_boxes = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    s = grid_size
    centre = (all_boxes[:, :2] + all_boxes[:, 2:]) / 2  # [M, 2] cx, cy
    size = (all_boxes[:, 2:] - all_boxes[:, :2]).clamp(min=0)  # [M, 2] w, h
    col = (centre[:, 0] * s).floor().clamp(0, s - 1).long()
    row = (centre[:, 1] * s).floor().clamp(0, s - 1).long()
    cell = (image * s + row) * s + col  # [M] flat cell index over the batch

    num_cells = len(boxes) * s * s
    area = size.prod(-1)
    largest = torch.full((num_cells,), -1.0, device=device).scatter_reduce(
        0, cell, area, "amax")
    order = torch.arange(len(cell), device=device)
    candidate = torch.where(area == largest[cell], order, len(cell))
    first = torch.full((num_cells,), len(cell), device=device).scatter_reduce(
        0, cell, candidate, "amin")
    keep = first[cell] == order  # [M] the one object each occupied cell learns

    target = torch.cat([centre * s - torch.stack([col, row], -1), size.sqrt()], dim=-1)
    return dict(image=image[keep], row=row[keep], col=col[keep], box=all_boxes[keep],
                target=target[keep], label=all_labels[keep], object_cell=cell, object_learned=keep)
