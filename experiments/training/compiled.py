"""``train.compile``: the detector's convolutional trunk under ``torch.compile`` while training,
with a fallback to eager mode when compiling fails.

The trunk is the module a detector keeps as ``features`` (SSD's VGG) or ``backbone`` (YOLO's
darknet, the R-CNN family's VGG); heads, losses, anchor matching and NMS stay eager (their
data-dependent shapes recompile at every batch). ``nn.Module.compile`` compiles in place, so
parameter names, ``state_dict`` keys and checkpoints are those of the eager model.

Compiling happens lazily, at the first training step: an error there (no C++ compiler, an
unsupported op, a backend failure) restores eager mode, logs a warning naming the detector and the
reason, and the step is run again eagerly; ``metrics()`` records what was used and why.
"""
from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger(__name__)

TRUNKS = ("features", "backbone")


def root_cause(error: BaseException) -> str:
    """The innermost exception of ``error``'s chain, as ``Type: message`` (first line)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


class CompiledTrunk:
    """Compiles ``model``'s trunk when ``enabled``; ``used`` is ``compiled``, ``eager`` (not asked,
    or fallen back) and ``note`` says why a request was not honoured.

    Args:
        model: a detector (``features`` or ``backbone`` submodule); compiled in place.
        enabled: ``train.compile``.
        detector: the detector's name, for the warning.
        backend: ``torch.compile``'s backend (``inductor``; tests use a failing one).
    """

    def __init__(self, model: nn.Module, enabled: bool, detector: str, backend: str = "inductor") -> None:
        self.detector, self.requested, self.note = detector, enabled, ""
        self.modules = [m for name in TRUNKS if isinstance(m := getattr(model, name, None), nn.Module)]
        self.used = "compiled" if enabled and self.modules else "eager"
        self.first_step_done = not enabled
        if enabled and not self.modules:
            self.note = f"{detector}: no trunk to compile (no `features` or `backbone` module); eager"
            log.warning("train.compile=true: %s", self.note)
        for module in self.modules if self.used == "compiled" else ():
            module.compile(backend=backend)

    def run(self, step):
        """``step()`` (a forward with the losses); at the first call of a compiled trunk, a
        failure falls back to eager mode and runs ``step()`` again."""
        if self.first_step_done:
            return step()
        self.first_step_done = True
        try:
            return step()
        except Exception as error:   # a compile failure surfaces at the first call
            self.fallback(error)
            return step()

    def fallback(self, error: BaseException) -> None:
        for module in self.modules:
            module._compiled_call_impl = None   # nn.Module.compile's hook: back to the eager forward
        self.used = "eager"
        self.note = f"torch.compile failed for {self.detector} ({root_cause(error)}); trained in eager mode"
        log.warning("train.compile=true: %s", self.note)

    def restore(self) -> None:
        """Eager forward again after training (evaluation and the speed protocol time eager)."""
        for module in self.modules:
            module._compiled_call_impl = None

    def metrics(self) -> dict:
        """metrics.json: train_compile (requested), train_compile_used, train_compile_note."""
        return {"train_compile": self.requested, "train_compile_used": self.used,
                "train_compile_note": self.note}

