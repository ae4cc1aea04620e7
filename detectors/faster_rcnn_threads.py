"""Faster R-CNN's two serial CPU hot spots, spread over the intra-op threads; the numbers are
unchanged.

torchvision's CPU kernels for RoIAlign's backward and NMS run on one core, and training calls
them on the whole batch: the RoIAlign backward over every sampled RoI (batch x 64 in compare),
the RPN's NMS once per image. Both are independent per image, so the batch is cut into
``torch.get_num_threads()`` runs of whole images and each run goes to a worker thread (torch's
operators release the GIL). On CUDA, or with one thread, nothing changes.

- ``ThreadedRoIAlign``: ``MultiScaleRoIAlign`` on one feature map whose backward calls
  torchvision's backward kernel per run of images; every RoI touches only its own image's
  gradient, so the sum of the runs' gradients is the serial kernel's, bit for bit.
- ``ThreadedRPN``: ``RegionProposalNetwork`` whose ``filter_proposals`` (top-n, clip, small-box
  filter, NMS, post-NMS top-n: all per image) runs torchvision's own on each run of images.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

_POOLS: dict[int, ThreadPoolExecutor] = {}


def _threads_for(tensor: Tensor, items: int) -> int:
    """Worker threads for ``items`` independent images on ``tensor``'s device (1: run inline)."""
    return min(torch.get_num_threads(), items) if tensor.device.type == "cpu" else 1


def _map(fn, jobs: list) -> list:
    """``[fn(*job) for job in jobs]``, the jobs on a pool of ``len(jobs)`` threads. Autocast and
    grad mode are thread-local: each worker runs under the caller's."""
    if len(jobs) == 1:
        return [fn(*jobs[0])]
    grad = torch.is_grad_enabled()
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def run(job):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]):
            return fn(*job)

    pool = _POOLS.setdefault(len(jobs), ThreadPoolExecutor(len(jobs), thread_name_prefix="detbench"))
    return list(pool.map(run, jobs))


def image_runs(num_images: int, runs: int) -> list[tuple[int, int]]:
    """``runs`` contiguous (start, stop) ranges of about equal size covering ``num_images``."""
    bounds = [round(i * num_images / runs) for i in range(runs + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class _RoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign in fp32 (as its autocast rule does), backward split by image.

    features [B, C, H, W]; rois [K, 5] (image index, x1, y1, x2, y2 in input pixels), sorted
    by image index (as ``_convert_to_roi_format`` gives them) -> [K, C, out_h, out_w]."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, scale: float, out_h: int, out_w: int,
                sampling_ratio: int) -> Tensor:
        with torch.autocast(features.device.type, enabled=False):
            pooled = torch.ops.torchvision.roi_align(features.float(), rois.float(), scale, out_h, out_w,
                                                     sampling_ratio, False)
        ctx.save_for_backward(rois)
        ctx.args, ctx.shape, ctx.dtype = (scale, out_h, out_w), features.shape, features.dtype
        ctx.sampling_ratio = sampling_ratio
        return pooled.to(features.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        scale, out_h, out_w = ctx.args
        batch, channels, height, width = ctx.shape
        grad = grad.float()

        def backward_of(lo: int, hi: int) -> Tensor:
            return torch.ops.torchvision._roi_align_backward(
                grad[lo:hi], rois[lo:hi].float(), scale, out_h, out_w, batch, channels, height, width,
                ctx.sampling_ratio, False)

        image = rois[:, 0].long()
        runs = image_runs(batch, _threads_for(grad, batch))
        cuts = torch.searchsorted(image, torch.tensor([a for a, _ in runs] + [batch], device=image.device))
        jobs = [(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
        parts = _map(backward_of, jobs or [(0, 0)])
        return sum(parts[1:], parts[0]).to(ctx.dtype), None, None, None, None, None


class ThreadedRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` (same arguments, same outputs) with ``_RoIAlign``'s threaded
    backward on a single feature map; several maps go to torchvision's own."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        maps = _filter_input(x, self.featmap_names)
        if len(maps) != 1:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None:
            self.scales, self.map_levels = _setup_scales(maps, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)                          # [K, 5], sorted by image
        return _RoIAlign.apply(maps[0], rois, self.scales[0], *self.output_size, self.sampling_ratio)


class ThreadedRPN(RegionProposalNetwork):
    """``RegionProposalNetwork`` whose per-image proposal filtering (NMS included) runs on
    worker threads, a run of whole images each; the same proposals in the same order."""

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """proposals [B, A, 4], objectness [B * A, 1] -> per image boxes [P_i, 4], scores [P_i]."""
        num_images = proposals.shape[0]
        runs = image_runs(num_images, _threads_for(proposals, num_images))
        if len(runs) == 1:
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        per_image = objectness.reshape(num_images, -1)
        jobs = [(proposals[a:b], per_image[a:b].reshape(-1, 1), image_shapes[a:b], num_anchors_per_level)
                for a, b in runs]
        parts = _map(super().filter_proposals, jobs)
        return [b for boxes, _ in parts for b in boxes], [s for _, scores in parts for s in scores]


def with_serial_ops(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a Faster R-CNN with torchvision's own serial ``MultiScaleRoIAlign`` and
    ``RegionProposalNetwork`` in place of the threaded ones (the reference for tests and
    ``benchmarks/train_speed.py``); the same weights."""
    reference = copy.deepcopy(model)
    pool = reference.roi_heads.box_roi_pool
    if isinstance(pool, ThreadedRoIAlign):
        reference.roi_heads.box_roi_pool = MultiScaleRoIAlign(pool.featmap_names, pool.output_size,
                                                              pool.sampling_ratio)
    if isinstance(reference.rpn, ThreadedRPN):
        reference.rpn.__class__ = RegionProposalNetwork
    return reference
