"""What one training iteration costs, measured on a real batch before training starts.

``measure_step`` runs one forward + backward (no optimizer step) of the detector in training mode on
the first ``batch_size`` images of the training split, under ``torch.utils.flop_counter``'s
``FlopCounterMode`` (2 FLOPs per multiply-add, as ``experiments.speed.flops``), and optionally times
a second one. The model's parameters, buffers (BatchNorm statistics), gradients and the random
generators are restored afterwards, so training is the same with or without the probe.

The counter knows convolutions and matrix products (forward and backward). It does not know
torchvision's RoI operators; their share is *estimated* from the actual RoIs and reported apart
(``estimated``), never hidden in the count:

* ``roi_align`` forward: 8 FLOPs (4 multiply-adds of the bilinear weights) per sample per channel,
  ``sampling_ratio``^2 samples per bin (adaptive: ceil(RoI height / bins) x ceil(RoI width / bins),
  per RoI), ``pooled_h x pooled_w`` bins; its backward scatters the same weights: the same count.
* ``roi_pool`` forward: 1 FLOP (a comparison) per feature-map cell each RoI covers, per channel;
  backward: 1 FLOP (an add through the arg-max) per output element.

Element-wise work (activations, losses, box coding, target assignment), NMS and the optimizer step
are not counted; they are small next to the convolutions of these detectors.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.data.collate import collate
from experiments.training.checkpoint import restore_rng_states, rng_states


@dataclass(frozen=True)
class StepCost:
    """One iteration of one process: ``flops`` counted + estimated (FLOPs), ``estimated`` the
    RoI operators' estimated share of it (FLOPs), ``images`` in the batch, ``seconds`` one timed
    step (forward + backward, s; None when not timed)."""
    flops: int
    estimated: int
    images: int
    seconds: float | None


def _roi_extent(rois: torch.Tensor, scale: float, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI heights and widths [R] in feature-map cells (``rois`` [R, 5]: batch index, x1, y1, x2, y2)."""
    boxes = rois[:, 1:].float() * scale - offset
    return (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0), (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)


def _align_samples(rois, scale, pooled_h, pooled_w, sampling_ratio, aligned) -> float:
    """Bilinear samples per channel over every RoI and bin."""
    if sampling_ratio > 0:
        per_bin = torch.full((len(rois),), float(sampling_ratio ** 2))
    else:
        h, w = _roi_extent(rois, scale, 0.5 if aligned else 0.0)
        per_bin = torch.ceil(h / pooled_h) * torch.ceil(w / pooled_w)
    return float(per_bin.sum()) * pooled_h * pooled_w


def roi_align_flops(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                    out_val=None) -> int:
    return int(8 * input.shape[1] * _align_samples(rois, spatial_scale, pooled_height, pooled_width,
                                                   sampling_ratio, aligned))


def roi_align_backward_flops(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                             height, width, sampling_ratio, aligned, out_val=None) -> int:
    return int(8 * channels * _align_samples(rois, spatial_scale, pooled_height, pooled_width,
                                             sampling_ratio, aligned))


def roi_pool_flops(input, rois, spatial_scale, pooled_height, pooled_width, out_val=None) -> int:
    h, w = _roi_extent(rois, spatial_scale)
    cells = torch.maximum(h * w, torch.full_like(h, float(pooled_height * pooled_width)))
    return int(input.shape[1] * float(cells.sum()))


def roi_pool_backward_flops(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size,
                            channels, height, width, out_val=None) -> int:
    return int(grad.numel())


def _estimates() -> dict:
    """FlopCounterMode's custom mapping for torchvision's RoI operators (raw arguments: the RoIs'
    sizes matter); empty when torchvision's ops are not registered."""
    ops = getattr(torch.ops, "torchvision", None)
    if ops is None:
        return {}
    mapping = {}
    for name, fn in (("roi_align", roi_align_flops), ("_roi_align_backward", roi_align_backward_flops),
                     ("roi_pool", roi_pool_flops), ("_roi_pool_backward", roi_pool_backward_flops)):
        try:
            packet = getattr(ops, name)
        except (AttributeError, RuntimeError):
            continue
        fn._get_raw = True   # FlopCounterMode passes the tensors themselves, not their shapes
        mapping[packet] = fn
    return mapping


def _first_batch(dataset, batch_size: int, device: torch.device):
    images, targets = collate([dataset[i] for i in range(min(batch_size, len(dataset)))])
    images = [im.to(device) for im in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def _step(model: torch.nn.Module, images, targets) -> None:
    losses = model(images, targets)
    sum(losses.values()).backward()


def measure_step(model: torch.nn.Module, dataset, batch_size: int, device: torch.device,
                 timed: bool = False) -> StepCost:
    """Count (and with ``timed`` time) one training step of ``model`` on the first ``batch_size``
    images of ``dataset``; everything the step changes is put back (module doc)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng, was_training = rng_states(), model.training
    images, targets = _first_batch(dataset, batch_size, device)
    estimates = _estimates()
    model.train()
    try:
        with FlopCounterMode(display=False, custom_mapping=estimates) as counter:
            _step(model, images, targets)
        counts = counter.get_flop_counts().get("Global", {})
        total = int(sum(counts.values()))
        estimated = int(sum(v for k, v in counts.items() if k in estimates))
        seconds = None
        if timed:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _step(model, images, targets)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        restore_rng_states(rng)
        model.train(was_training)
    return StepCost(total, estimated, len(images), seconds)


def cost_metrics(cost: StepCost, iterations: int, world_size: int) -> dict:
    """metrics.json's training cost of ``iterations`` optimizer steps on ``world_size`` processes:
    FLOPs per iteration (all processes), of which estimated, total training FLOPs, images seen."""
    per_iteration = cost.flops * world_size
    return {"train_flops_per_iteration": per_iteration,
            "train_flops_estimated_per_iteration": cost.estimated * world_size,
            "train_flops": per_iteration * iterations,
            "train_images_seen": cost.images * world_size * iterations,
            "train_step_probe_s": cost.seconds if cost.seconds is not None else math.nan}
