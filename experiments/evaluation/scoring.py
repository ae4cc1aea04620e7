"""Running a detector over a dataset and scoring it: the runner's eval stage and the
trainer's periodic validation."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from detectors.base import Detection, Target
from experiments.data.collate import collate


@torch.inference_mode()
def predict(model, dataset, batch_size: int, device: torch.device, max_images: int = 0,
            num_workers: int = 0) -> tuple[list[Detection], list[Target], list[tuple[int, int]]]:
    """Detections (on the CPU), targets and image sizes (H, W) for ``dataset``, whose items are
    loaded by ``num_workers`` DataLoader workers (0: in this process).

    Under DDP each rank predicts its share (``DistributedSampler``, no shuffle) and rank 0
    receives everything, each image once, in dataset order; other ranks get empty lists.
    """
    if max_images and max_images < len(dataset):
        dataset = Subset(dataset, range(max_images))
    distributed = dist.is_available() and dist.is_initialized()
    sampler = DistributedSampler(dataset, shuffle=False) if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=num_workers)
    was_training = model.training
    model.eval()
    records = []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for image, target, out in zip(images, targets, outputs):
            records.append((target["image_id"], {k: v.detach().cpu() for k, v in out.items()},
                            target, tuple(image.shape[-2:])))
    model.train(was_training)
    if distributed:
        gathered = gather_to_rank0(records)
        if gathered is None:
            return [], [], []
        unique = {r[0]: r for r in gathered}  # the sampler pads ranks with repeated images
        records = [unique[k] for k in sorted(unique)]
    return [r[1] for r in records], [r[2] for r in records], [r[3] for r in records]


def score(model, dataset, batch_size: int, device: torch.device, backend: str,
          max_images: int = 0, num_workers: int = 0):
    """``experiments.evaluation.evaluate`` on ``dataset``; None on ranks other than 0."""
    from experiments.evaluation import evaluate

    detections, targets, sizes = predict(model, dataset, batch_size, device, max_images, num_workers)
    if not targets:
        return None
    return evaluate(detections, targets, dataset.class_names, sizes,
                    label_to_category_id=dataset.label_to_category_id, backend=backend)


def gather_to_rank0(items: list) -> list | None:
    """Concatenate every rank's ``items`` on rank 0 (rank order; tensors moved to the CPU first).

    Returns the whole list on rank 0 and None elsewhere; ``items`` itself when torch.distributed
    is not initialised. A DistributedSampler pads ranks with repeated images: drop repeated
    image ids before ``evaluate``, which refuses them. With NCCL, set each rank's CUDA device.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(items)
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    gathered = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(_to_cpu(list(items)), gathered, dst=0)
    if rank != 0:
        return None
    return [item for part in gathered for item in part]


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
