"""Who measured what, where: the identity keys of ``metrics.json``, written once by the runner.

``experiments.run`` owns these keys (the speed protocol returns only speed keys, so nothing is
written twice from different inputs):

- ``device``: :func:`device_name`, the one human name of the device (GPU model, or the CPU's
  model from /proc/cpuinfo with the torch thread count);
- ``torch_version``, ``torchvision_version``, ``python_version``, ``hostname``: :func:`environment`;
- ``params``, ``num_candidates``: :func:`model_facts` (``weights_source`` the runner writes
  after loading any weights).

:func:`synchronize` is the one wait-for-the-device used by the speed protocol
(``experiments.speed.benchmark``, ``experiments.speed.peak``) and by every script in ``benchmarks/``.
"""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), else platform's guess."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """The device's one human name: "NVIDIA H200", or "cpu: AMD EPYC, 2 threads"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"
    return device.type


def environment() -> dict[str, str]:
    """Library versions and the host: the software half of a run's identity."""
    return {"torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
            "python_version": platform.python_version(), "hostname": platform.node()}


def model_facts(model: torch.nn.Module, image_size: tuple[int, int]) -> dict[str, int]:
    """``params`` (parameters, all of them) and ``num_candidates`` (boxes scored per image of
    ``image_size`` (H, W) before NMS) of a detbench detector."""
    return {"params": sum(p.numel() for p in model.parameters()),
            "num_candidates": int(model.num_candidates((int(image_size[0]), int(image_size[1]))))}


def run_identity(cfg: DictConfig) -> dict:
    """Who ran what, where: the identity columns of metrics.json."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {"detector": OmegaConf.select(cfg, "detector.name", default="?"),
            "dataset": OmegaConf.select(cfg, "dataset.name", default="?"),
            "seed": OmegaConf.select(cfg, "seed", default=None), "status": "running",
            "overrides": overrides, "git_commit": git_commit(),
            **environment(),
            **{f"paper_{k}": v for k, v in (OmegaConf.select(cfg, "paper") or {}).items()}}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
