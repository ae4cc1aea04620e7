"""The process a job runs in: its device, its place in a distributed group, its random seeds."""
from __future__ import annotations

import os
import random

import torch
import torch.distributed as dist


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a device; under torchrun, this rank's own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is visible")
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def setup_distributed(device: str) -> bool:
    """Join the process group when launched by torchrun or by a multi-task SLURM job
    (submitit exports the environment); returns whether this is rank 0."""
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and "WORLD_SIZE" not in os.environ:
        import submitit  # only on a SLURM cluster

        submitit.helpers.TorchDistributedEnvironment().export()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
