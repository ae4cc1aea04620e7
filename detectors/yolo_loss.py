"""YOLO v1's sum-squared-error loss (arXiv 1506.02640, equation 3), in four named parts.

For one image, with 1_ij^obj = "predictor j of cell i is responsible for an object" and
1_i^obj = "an object's centre lies in cell i"::

    loss_coord      = lambda_coord * sum_ij 1_ij^obj [(x - x^)^2 + (y - y^)^2
                                                      + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
    loss_conf_obj   =                sum_ij 1_ij^obj (C - C^)^2
    loss_conf_noobj = lambda_noobj * sum_ij (1 - 1_ij^obj) (0 - C^)^2
    loss_class      =                sum_i 1_i^obj sum_c (p(c) - p^(c))^2

- Responsible predictor: of the B predictors in the object's cell, the one whose predicted box
  has the highest IoU with the object now; when all B have IoU 0 (typical early in training),
  the one whose (x, y, sqrt w, sqrt h) is nearest in squared distance (darknet's rule).
- Confidence target C: ``"iou"`` (default, the paper's definition of confidence,
  Pr(object) * IoU(pred, truth), and darknet's ``rescore=1``): the responsible box's current
  IoU with the object, treated as a constant (no gradient through it); ``"one"``: 1, which
  makes the confidence an objectness score. The non-responsible predictors of an object's cell
  count as "no object", as in the paper.
- One object per cell (the cell has one class distribution): see
  ``yolo_grid.assign_objects_to_cells`` (the largest object's centre wins the cell).
- Reduction: each part is summed over an image's cells and predictors as in the paper, then
  averaged over the images of the batch (darknet divides its learning rate by the batch size,
  which is the same thing).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detectors.yolo_grid import assign_objects_to_cells, paired_iou, params_to_boxes, split_outputs

CONFIDENCE_TARGETS = ("iou", "one")


class YOLOLoss(nn.Module):
    def __init__(self, grid_size: int, boxes_per_cell: int, num_classes: int,
                 lambda_coord: float, lambda_noobj: float, confidence_target: str) -> None:
        super().__init__()
        if confidence_target not in CONFIDENCE_TARGETS:
            raise ValueError(f"confidence_target must be one of {CONFIDENCE_TARGETS}, "
                             f"got {confidence_target!r}")
        self.grid_size = grid_size
        self.boxes_per_cell = boxes_per_cell
        self.num_classes = num_classes
        self.lambda_coord = lambda_coord
        self.lambda_noobj = lambda_noobj
        self.confidence_target = confidence_target

    def assign_cells(self, boxes: list[Tensor], labels: list[Tensor]) -> dict[str, Tensor]:
        """The responsible-cell rule (``yolo_grid.assign_objects_to_cells``) on this grid: what
        ``forward`` learns and what ``YOLO.assign_objects`` reports."""
        return assign_objects_to_cells(boxes, labels, self.grid_size)

    def forward(self, outputs: Tensor, boxes: list[Tensor], labels: list[Tensor]
                ) -> dict[str, Tensor]:
        """outputs: [N, S, S, B*5+C] raw network output (layout in ``yolo_grid``).
        boxes: per image float [n_i, 4] x1 y1 x2 y2 normalised to the input ([0, 1]);
        labels: per image int64 [n_i] in 1..C. Returns the four parts, each a scalar."""
        n, s = outputs.shape[0], self.grid_size
        if outputs.shape[1:] != (s, s, self.boxes_per_cell * 5 + self.num_classes):
            raise ValueError(f"outputs of shape {list(outputs.shape)} do not match S={s}, "
                             f"B={self.boxes_per_cell}, C={self.num_classes}")
        outputs = outputs.float()  # the sums of squares in float32 even under autocast
        params, confidence, class_scores = split_outputs(outputs, self.boxes_per_cell)
        cells = self.assign_cells(boxes, labels)
        image, row, col = cells["image"], cells["row"], cells["col"]  # [K] each

        # Which of the cell's B predictors is responsible for its object.
        cell_params = params[image, row, col]  # [K, B, 4]
        cell_boxes = params_to_boxes(cell_params, col[:, None].float(), row[:, None].float(), s)
        iou = paired_iou(cell_boxes, cells["box"][:, None, :])  # [K, B]
        best_iou, by_iou = iou.max(dim=1)
        distance = ((cell_params - cells["target"][:, None, :]) ** 2).sum(-1)  # [K, B]
        by_distance = distance.argmin(dim=1)
        responsible = torch.where(best_iou > 0, by_iou, by_distance).detach()  # [K]
        k = torch.arange(len(responsible), device=outputs.device)

        coord = ((cell_params[k, responsible] - cells["target"]) ** 2).sum()
        predicted_confidence = confidence[image, row, col, responsible]  # [K]
        if self.confidence_target == "iou":
            confidence_target = iou[k, responsible].detach()
        else:
            confidence_target = torch.ones_like(predicted_confidence)
        conf_obj = ((confidence_target - predicted_confidence) ** 2).sum()

        is_responsible = torch.zeros_like(confidence, dtype=torch.bool)  # [N, S, S, B]
        is_responsible[image, row, col, responsible] = True
        conf_noobj = (confidence[~is_responsible] ** 2).sum()

        one_hot = torch.nn.functional.one_hot(cells["label"] - 1, self.num_classes)
        class_error = ((one_hot.to(class_scores.dtype) - class_scores[image, row, col]) ** 2).sum()

        return {
            "loss_coord": self.lambda_coord * coord / n,
            "loss_conf_obj": conf_obj / n,
            "loss_conf_noobj": self.lambda_noobj * conf_noobj / n,
            "loss_class": class_error / n,
        }
