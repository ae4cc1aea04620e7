"""Shared fixtures: composing detbench's Hydra config in-process, and locating shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

# ../shared/data beside the project; DETBENCH_SHARED_DATA points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get("DETBENCH_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))

# A few synthetic images, a couple of iterations, a tiny benchmark: a full run in seconds.
TINY_RUN = [
    "device=cpu",
    "dataset.train.num_images=4", "dataset.val.num_images=4", "dataset.image_size=128",
    "train.epochs=1", "train.batch_size=2", "train.log_every=1", "train.augmentation=none",
    "bench.batch_sizes=[1]", "bench.iterations=1", "bench.warmup=0",
    "eval.batch_size=2", "eval.samples=2",
]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Per-image tensor ops are small: intra-op threads only add contention on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def compose_config():
    """compose_config(overrides) -> DictConfig, as `detbench` would see it (no hydra node)."""

    def _compose(overrides: list[str], return_hydra_config: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_module("conf", version_base="1.3"):
            return compose("config", overrides=overrides,
                           return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


def default_sigint() -> None:
    """``preexec_fn`` of a child a test sends SIGINT: a shell's background job (``pytest -q &``)
    starts with SIGINT ignored, which the child would inherit, and Ctrl-C would never arrive."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def sigint_raises():
    """For a test that sends itself SIGINT: Python's KeyboardInterrupt handler for its duration,
    whatever the launching shell set (a background job ignores SIGINT)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
