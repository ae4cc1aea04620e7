"""train.compile: the trunk compiled in place (checkpoint keys unchanged), the same losses as eager,
and a compile failure falling back to eager mode with the detector and the reason recorded."""
from __future__ import annotations

import csv
import logging

import pandas as pd
import torch
from hydra.utils import instantiate

from analysis.provenance import provenance_frame
from experiments.build import build_detector
from experiments.training.trainer import Trainer
from tests.conftest import TINY_RUN

BROKEN = "detbench_test_broken_backend"


def broken_backend(graph_module, example_inputs):
    raise RuntimeError("no C++ compiler found (test backend)")


def _register_broken() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend
    if BROKEN not in _BACKENDS:
        register_backend(name=BROKEN)(broken_backend)


def fit(compose_config, tmp_path, compile: bool, backend: str = "inductor"):
    cfg = compose_config(["detector=yolov1_cpu", *TINY_RUN, "dataset.train.num_images=4"])
    dataset = instantiate(cfg.dataset.train)
    torch.manual_seed(0)
    model = build_detector(cfg.detector.model, dataset.num_classes)
    keys = list(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = Trainer(model, dataset, optimizer, None, device=torch.device("cpu"), epochs=1, batch_size=2,
                      out_dir=tmp_path, log_every=1, show_progress=False, compile=compile,
                      detector="yolov1_cpu", compile_backend=backend)
    result = trainer.fit()
    with open(tmp_path / "train_log.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    return losses, result, model, keys


def test_compiled_trunk_trains_like_eager_and_keeps_checkpoint_keys(compose_config, tmp_path):
    # the "eager" backend runs dynamo's graph capture without code generation: the capture and
    # the in-place module compile are what this checks, cheaply
    eager, eager_result, _, _ = fit(compose_config, tmp_path / "a", compile=False)
    compiled, result, model, keys = fit(compose_config, tmp_path / "b", compile=True, backend="eager")
    assert eager_result["train_compile_used"] == "eager" and result["train_compile_used"] == "compiled"
    assert result["train_compile_note"] == ""
    assert len(compiled) == len(eager) == 2
    assert torch.allclose(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4), (compiled, eager)
    assert list(model.state_dict()) == keys   # no `_orig_mod.` prefixes: checkpoints load eagerly
    assert model.backbone._compiled_call_impl is None   # eager again after fit


def test_a_compile_failure_falls_back_to_eager_naming_detector_and_reason(compose_config, tmp_path, caplog):
    _register_broken()
    eager, _, _, _ = fit(compose_config, tmp_path / "a", compile=False)
    with caplog.at_level(logging.WARNING):
        losses, result, _, _ = fit(compose_config, tmp_path / "b", compile=True, backend=BROKEN)
    assert result["train_compile"] is True and result["train_compile_used"] == "eager"
    assert "yolov1_cpu" in result["train_compile_note"] and "no C++ compiler" in result["train_compile_note"]
    assert any("yolov1_cpu" in r.getMessage() and "eager" in r.getMessage() for r in caplog.records)
    assert torch.allclose(torch.tensor(losses), torch.tensor(eager), rtol=1e-5)   # training went on


def test_provenance_marks_compiled_and_failed_compiles():
    runs = pd.DataFrame([{"run": "a", "train_precision": "bf16", "train_precision_requested": "bf16",
                          "train_compile": True, "train_compile_used": "compiled", "train_iterations": 3},
                         {"run": "b", "train_precision": "fp32", "train_precision_requested": "fp32",
                          "train_compile": True, "train_compile_used": "eager", "train_iterations": 3}])
    assert list(provenance_frame(runs)["precision"]) == ["bf16+compiled", "fp32 (compile failed: eager)"]
