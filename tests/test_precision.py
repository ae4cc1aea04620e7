"""Training precision and layout: bf16 autocast trains each compare detector with finite losses
close to fp32's on the same batches; channels-last gives the contiguous layout's losses; an
unsupported precision falls back to fp32 with a note, or fails when strict."""
from __future__ import annotations

import csv
import logging

import pytest
import torch
from hydra.utils import instantiate

from experiments.build import build_detector
from experiments.data.collate import collate
from experiments.job.settings import check_config
from experiments.training import precision as precision_module
from experiments.training.precision import resolve_precision, set_channels_last, uses_channels_last
from experiments.training.trainer import Trainer
from tests.conftest import TINY_RUN

COMPARE_DETECTORS = ["ssd300_cpu", "yolov1_cpu", "faster_rcnn_vgg16_cpu"]
needs_bf16 = pytest.mark.skipif(not precision_module.cpu_has_native_bf16(),
                                reason="this CPU has no native bf16 (AVX512-BF16 / AMX)")


def detector_and_data(compose_config, detector: str, contiguous: bool = False):
    """Compare's detector (its own input size, 1/8 width) and 6 synthetic 128x128 images;
    ``contiguous``: SSD without its own NHWC layout."""
    layout = ["detector.model.channels_last=false"] if contiguous and detector.startswith("ssd") else []
    cfg = compose_config([f"detector={detector}", *TINY_RUN, "dataset.train.num_images=6", *layout])
    dataset = instantiate(cfg.dataset.train)
    return cfg, dataset


def train_losses(cfg, dataset, tmp_path, precision: str, channels_last: bool = False):
    """Total loss of each of 3 iterations (batches of 2) from the same weights, image order and
    sampling draws; fit()'s result; the model. Plain SGD with small steps: AdamW's first steps are
    sign-like, so a rounding difference in a near-zero gradient would send the two runs apart."""
    torch.manual_seed(0)
    model = build_detector(cfg.detector.model, dataset.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = Trainer(model, dataset, optimizer, None, device=torch.device("cpu"), epochs=1, batch_size=2,
                      out_dir=tmp_path, log_every=1, show_progress=False, precision=precision,
                      channels_last=channels_last)
    result = trainer.fit()
    with open(tmp_path / "train_log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)], result, model


@needs_bf16
@pytest.mark.parametrize("detector", COMPARE_DETECTORS)
def test_bf16_training_gives_finite_losses_near_fp32s(compose_config, tmp_path, detector):
    cfg, dataset = detector_and_data(compose_config, detector)
    fp32, fp32_result, _ = train_losses(cfg, dataset, tmp_path / "fp32", "fp32")
    bf16, bf16_result, _ = train_losses(cfg, dataset, tmp_path / "bf16", "bf16")
    assert fp32_result["train_precision"] == "fp32" and bf16_result["train_precision"] == "bf16"
    assert len(bf16) == len(fp32) == 3
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 != fp32   # bf16 really ran: its rounding shows in the losses
    # bf16 keeps 8 bits of mantissa: per-iteration losses within 10% of fp32's (Faster R-CNN's
    # proposals come from an NMS of bf16-rounded scores, so its sampled RoIs differ: 3-7% here)
    assert torch.allclose(torch.tensor(bf16), torch.tensor(fp32), rtol=0.1, atol=0.02), (bf16, fp32)


def losses_and_gradients(model, images, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses [L] and all parameter gradients, flattened, in float64, with fixed sampling draws."""
    model.zero_grad()
    torch.manual_seed(1)    # the same RPN / RoI sampling draws
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return torch.stack([v.detach() for v in losses.values()]).double(), grads.double()


@pytest.mark.parametrize("detector", COMPARE_DETECTORS)
def test_channels_last_gives_the_contiguous_losses_and_gradients(compose_config, detector):
    cfg, dataset = detector_and_data(compose_config, detector, contiguous=True)
    torch.manual_seed(0)
    model = build_detector(cfg.detector.model, dataset.num_classes).train()
    images, targets = collate([dataset[i] for i in range(2)])
    assert not uses_channels_last(model)
    loss_a, grad_a = losses_and_gradients(model, images, targets)
    set_channels_last(model, True)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and uses_channels_last(model)
    loss_b, grad_b = losses_and_gradients(model, images, targets)
    set_channels_last(model, False)
    loss_ref, grad_ref = losses_and_gradients(model.double(), [im.double() for im in images], targets)
    assert torch.allclose(loss_a, loss_b, rtol=1e-4, atol=1e-5)
    assert torch.allclose(loss_b, loss_ref, rtol=1e-4, atol=1e-5)
    # The early layers' fp32 gradients are a few % off float64's whatever the layout (BatchNorm
    # over 2 images): channels-last must be as close to float64 as contiguous is.
    error = {name: float((g - grad_ref).norm() / grad_ref.norm()) for name, g in (("nchw", grad_a), ("nhwc", grad_b))}
    assert error["nhwc"] <= 2 * error["nchw"] + 1e-5, error


def test_trainer_gives_the_model_back_its_own_layout(compose_config, tmp_path):
    cfg, dataset = detector_and_data(compose_config, "yolov1_cpu")
    _, result, model = train_losses(cfg, dataset, tmp_path, "fp32", channels_last=True)
    assert result["train_channels_last"] is True
    assert all(p.is_contiguous() for p in model.parameters())
    nhwc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).to(memory_format=torch.channels_last)
    assert uses_channels_last(nhwc) and not uses_channels_last(torch.nn.Conv2d(3, 4, 3))


def test_bf16_without_native_support_falls_back_to_fp32_or_fails_when_strict(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        used = resolve_precision("bf16", torch.device("cpu"), strict=False)
    assert used.used == "fp32" and used.requested == "bf16" and "native bf16" in used.note
    assert "training in fp32" in caplog.text
    assert used.metrics() == {"train_precision": "fp32", "train_precision_requested": "bf16",
                              "train_precision_note": used.note}
    with pytest.raises(ValueError, match="precision_strict"):
        resolve_precision("bf16", torch.device("cpu"), strict=True)


def test_fp16_on_cpu_and_unknown_precisions_are_refused():
    assert resolve_precision("fp16", torch.device("cpu"), strict=False).used == "fp32"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_precision("fp16", torch.device("cpu"), strict=True)
    with pytest.raises(ValueError, match="choose from"):
        resolve_precision("half", torch.device("cpu"), strict=False)


def test_old_amp_key_names_its_replacement(compose_config):
    cfg = compose_config(["detector=ssd300_cpu", *TINY_RUN, "+train.amp=true"])
    with pytest.raises(ValueError, match="train.precision"):
        check_config(cfg)
    check_config(compose_config(["detector=ssd300_cpu", *TINY_RUN, "train.precision=bf16",
                                 "train.channels_last=true"]))


def test_provenance_shows_the_precision_used_and_a_fallback():
    import pandas as pd

    from analysis.provenance import provenance_frame
    from analysis.table import MISSING

    runs = pd.DataFrame([{"run": "a", "train_precision": "bf16", "train_precision_requested": "bf16",
                          "train_channels_last": True, "train_iterations": 3},
                         {"run": "b", "train_precision": "fp32", "train_precision_requested": "bf16",
                          "train_channels_last": False, "train_iterations": 3},
                         {"run": "c", "train_iterations": 3}])
    assert list(provenance_frame(runs)["precision"]) == ["bf16+nhwc", "fp32 (bf16 asked)", MISSING]
