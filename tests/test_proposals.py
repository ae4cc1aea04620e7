"""Selective search proposals: deterministic, cached by image content and settings, mismatches
named, flat images counted, a missing ximgproc named (experiments/studies/proposals.py)."""
from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")
from experiments.studies import proposals as ss  # noqa: E402
from experiments.studies.proposals_cache import ProposalCacheMismatch  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(sys.modules["cv2"], "ximgproc"), reason=ss.INSTALL_HINT)
SMALL = {"min_side": 6, "max_proposals": 50}


def blocks(seed: int = 0, size: int = 96) -> torch.Tensor:
    """float [3, size, size]: a few coloured rectangles on a noisy background."""
    g = torch.Generator().manual_seed(seed)
    image = 0.1 * torch.rand(3, size, size, generator=g) + 0.2
    for _ in range(4):
        x, y = torch.randint(0, size - 30, (2,), generator=g).tolist()
        w, h = torch.randint(12, 30, (2,), generator=g).tolist()
        image[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=g)
    return (image * 255).round() / 255


def test_selective_search_is_deterministic_and_in_image_pixels():
    pixels = ss.to_uint8(blocks())
    first, seconds = ss.selective_search(pixels, ss.SelectiveSearchSettings(**SMALL))
    for _ in range(2):
        again, _ = ss.selective_search(pixels, ss.SelectiveSearchSettings(**SMALL))
        np.testing.assert_array_equal(first, again)     # the same ranked boxes, not only the same set
    assert 5 <= len(first) <= 50 and seconds > 0
    assert (first[:, 2] > first[:, 0]).all() and (first[:, 3] > first[:, 1]).all()
    assert first.min() >= 0 and first[:, 2:].max() <= 96
    assert ((first[:, 2:] - first[:, :2]) >= 6).all()   # min_side
    assert len(np.unique(first, axis=0)) == len(first)   # no duplicates


def test_second_run_reads_the_cache_and_a_changed_setting_rebuilds(tmp_path, monkeypatch, caplog):
    images = [blocks(0), blocks(1)]
    source = ss.SelectiveSearchProposals(SMALL, cache_dir=tmp_path, progress=False)
    made = source.precompute(images)
    assert made["proposal_images_computed"] == 2 and made["proposal_seconds_per_image"] > 0
    expected = source(images)

    def fail(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(ss, "selective_search", fail)
    reader = ss.SelectiveSearchProposals(SMALL, cache_dir=tmp_path, progress=False)
    assert reader.precompute(images)["proposal_images_computed"] == 0
    for a, b in zip(reader(images), expected):
        torch.testing.assert_close(a, b)
    # a mirrored image (flip augmentation) is served its mirror's boxes, mirrored
    flipped = reader([images[0].flip(-1)])[0]
    torch.testing.assert_close(flipped[:, [2, 0]], 96 - expected[0][:, [0, 2]])
    monkeypatch.undo()

    with pytest.raises(ProposalCacheMismatch, match=r"base_k: 150 -> 100"):
        ss.SelectiveSearchProposals({**SMALL, "base_k": 100}, cache_dir=tmp_path, on_mismatch="refuse")
    with caplog.at_level(logging.WARNING):
        rebuilt = ss.SelectiveSearchProposals({**SMALL, "base_k": 100}, cache_dir=tmp_path, progress=False)
    assert "base_k: 150 -> 100" in caplog.text and "rebuilding" in caplog.text
    assert rebuilt.cache.keys() == []
    assert rebuilt.precompute(images)["proposal_images_computed"] == 2


def test_flat_and_tiny_images_are_counted_not_errors():
    source = ss.SelectiveSearchProposals({**SMALL, "max_proposals": 2000}, progress=False)
    flat = torch.full((3, 64, 64), 0.5)
    tiny = torch.rand(3, 4, 4)                        # every region is narrower than min_side
    boxes = source([flat, tiny, blocks()])
    assert len(boxes[1]) == 0 and boxes[1].shape == (0, 4)
    assert 0 < len(boxes[0]) < 10                     # a flat image: a handful of boxes at most
    stats = source.stats(wanted=20)
    assert stats["proposal_images_served"] == 3
    assert stats["proposal_images_empty"] == 1
    assert stats["proposal_images_short"] >= 2        # the flat and the tiny image


def test_fresh_call_bypasses_the_cache(tmp_path):
    source = ss.SelectiveSearchProposals(SMALL, cache_dir=tmp_path, progress=False)
    boxes = source([blocks()], fresh=True)[0]
    assert source.cache.keys() == [] and len(boxes) > 0   # timed, never stored


def test_workers_give_the_serial_boxes(tmp_path):
    images = [blocks(2), blocks(3), blocks(4)]
    parallel = ss.SelectiveSearchProposals(SMALL, cache_dir=tmp_path / "p", workers=2, progress=False)
    parallel.precompute(images)
    serial = ss.SelectiveSearchProposals(SMALL, progress=False)
    for a, b in zip(parallel(images), serial(images)):
        torch.testing.assert_close(a, b)


def test_missing_ximgproc_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.1.0"))
    with pytest.raises(ImportError, match="opencv-contrib-python-headless"):
        ss.SelectiveSearchProposals(SMALL)


def test_attach_gives_external_proposal_detectors_their_source(compose_config, tmp_path):
    from experiments.build import build_detector
    from experiments.studies import proposal_stage

    cfg = compose_config(["detector=fast_rcnn_vgg16_cpu", f"+detector.proposals.cache_dir={tmp_path / 'c'}"])
    model = build_detector(cfg.detector.model, 5)
    facts = proposal_stage.attach(model, cfg)
    source = model.proposal_source
    assert isinstance(source, ss.SelectiveSearchProposals) and facts["proposal_max"] == 500
    assert (source.settings.min_side, source.settings.max_proposals) == (8, 500)
    assert (tmp_path / "c" / "settings.json").is_file()
    default = proposal_stage.default_cache_dir(cfg, source.settings)
    assert default.parts[:4] == ("runs", "cache", "proposals", "synthetic")
    cfg = compose_config(["detector=fast_rcnn_vgg16_cpu", "+detector.proposals.base_kk=3"])
    with pytest.raises(ValueError, match="base_kk"):
        proposal_stage.attach(model, cfg)
    ssd = compose_config(["detector=ssd300_cpu"])
    assert proposal_stage.attach(build_detector(ssd.detector.model, 5), ssd) == {}
