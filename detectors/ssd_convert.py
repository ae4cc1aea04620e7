"""Load torchvision's ``ssd300_vgg16`` into detbench's SSD300 (full width, no BatchNorm).

torchvision's model is the same network under other names; only its state_dict keys move:

| torchvision                                   | detbench                          |
|-----------------------------------------------|-----------------------------------|
| backbone.features.N (conv1_1 .. conv4_3)      | features.to_conv4_3.N             |
| backbone.scale_weight                         | features.l2norm.scale             |
| backbone.extra.0.N (pool4 .. conv5_3), N < 7  | features.to_fc7.N                 |
| backbone.extra.0.7.1 / .7.3 (fc6 / fc7)       | features.to_fc7.8 / .10           |
| backbone.extra.E.N (conv8 .. conv11), E >= 1  | features.extras.(E-1).N           |
| head.classification_head.module_list.K        | head.classification.K             |
| head.regression_head.module_list.K            | head.regression.K                 |

``ssd300_from_torchvision(model)`` builds an SSD with torchvision's settings (COCO scales,
its image mean/std, 400 candidates per class) and loads the weights. torchvision's
``num_classes`` counts the background; detbench's does not.
"""
from __future__ import annotations

import re

from torch import Tensor, nn

from detectors.ssd import SSD

_RULES = [
    (r"^backbone\.features\.(\d+)\.", r"features.to_conv4_3.\1."),
    (r"^backbone\.scale_weight$", "features.l2norm.scale"),
    (r"^backbone\.extra\.0\.7\.1\.", "features.to_fc7.8."),
    (r"^backbone\.extra\.0\.7\.3\.", "features.to_fc7.10."),
    (r"^backbone\.extra\.0\.([0-6])\.", r"features.to_fc7.\1."),
    (r"^head\.classification_head\.module_list\.", "head.classification."),
    (r"^head\.regression_head\.module_list\.", "head.regression."),
]


def convert_torchvision_ssd300_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of a torchvision ``ssd300_vgg16`` state_dict to detbench's SSD300's."""
    converted = {}
    for key, value in state.items():
        extra = re.match(r"^backbone\.extra\.([1-9])\.(.*)$", key)
        if extra:
            converted[f"features.extras.{int(extra.group(1)) - 1}.{extra.group(2)}"] = value
            continue
        for pattern, replacement in _RULES:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                converted[new_key] = value
                break
        else:
            raise ValueError(f"torchvision SSD300 state_dict: no rule for key '{key}'")
    return converted


def ssd300_from_torchvision(model: nn.Module, **overrides) -> SSD:
    """A detbench SSD300 holding the weights of torchvision ``ssd300_vgg16`` ``model``, with the
    same pre- and post-processing settings (``overrides`` change any SSD argument)."""
    num_outputs = model.head.classification_head.num_columns
    settings = dict(
        backbone="vgg16", input_size=(300, 300), width=1.0, batch_norm=False, extra_layers="ssd300",
        scales="coco300", aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]], steps=[8, 16, 32, 64, 100, 300],
        clip=True, score_thresh=model.score_thresh, nms_thresh=model.nms_thresh,
        max_detections=model.detections_per_img, candidates_before_nms=model.topk_candidates,
        image_mean=tuple(model.transform.image_mean), image_std=tuple(model.transform.image_std))
    settings.update(overrides)
    ssd = SSD(num_classes=num_outputs - 1, **settings)
    ssd.load_state_dict(convert_torchvision_ssd300_state_dict(model.state_dict()), strict=True)
    ssd.weights_source = "torchvision ssd300_vgg16 state_dict"
    return ssd
