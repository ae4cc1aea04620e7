"""detbench-dataset: the counting function on known data, the console script end to end, the
dataset configs, and (when ../shared/data is present) the real BCCD and coco_tiny figures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from detectors.base import Target
from experiments.data.coco import COCODetection
from experiments.data.dataset_cli import describe_dataset, main
from experiments.data.stats import dataset_stats, merge_stats
from experiments.data.voc import VOCDetection
from experiments.data.writers import write_coco, write_voc, write_yolo_txt
from tests.conftest import SHARED_DATA

NAMES = ["cat", "dog"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def known_samples():
    """Two 200x200 images: 3 small / 1 medium / 1 large objects, one crowd, one zero-size."""
    def t(boxes, labels, image_id, crowd):
        b = torch.tensor(boxes, dtype=torch.float32)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return torch.rand(3, 200, 200), Target(boxes=b, labels=torch.tensor(labels), image_id=image_id,
                                               area=area, iscrowd=torch.tensor(crowd))
    return [t([[0, 0, 10, 10], [20, 20, 60, 60], [5, 5, 5, 30]], [1, 2, 1], 1, [0, 0, 0]),
            t([[0, 0, 150, 150], [10, 10, 20, 40], [50, 50, 70, 60]], [2, 1, 1], 2, [0, 0, 1])]


def test_dataset_stats_counts_classes_sizes_drops_and_crowd(tmp_path):
    path = write_coco(tmp_path, known_samples(), NAMES)
    stats = dataset_stats(COCODetection(tmp_path, path.relative_to(tmp_path), "images"),
                          decode_images=True)
    assert stats["images"] == 2 and stats["boxes"] == 6 and stats["kept_boxes"] == 5
    assert stats["dropped_boxes"] == 1 and stats["dropped_by_reason"] == {"zero_area": 1}
    assert stats["crowd"] == 1
    assert stats["per_class"] == {"cat": 2, "dog": 2}  # non-crowd only
    assert stats["per_size"] == {"small": 2, "medium": 1, "large": 1}  # 100, 300 | 1600 | 22500
    assert stats["image_errors"] == {} and stats["images_without_boxes"] == 0
    both = merge_stats([stats, stats])
    assert both["boxes"] == 12 and both["per_size"]["small"] == 4 and both["dropped_by_reason"] == {"zero_area": 2}


def test_stats_count_unreadable_images(tmp_path):
    write_voc(tmp_path, known_samples(), NAMES)
    (tmp_path / "JPEGImages" / "000002.png").write_bytes(b"\x89PNG broken")
    stats = dataset_stats(VOCDetection(tmp_path, "trainval", NAMES), decode_images=True)
    assert stats["image_errors"] == {"image_ImageFileError": 1}
    assert "000002.png" in stats["examples"]["image_ImageFileError"][0]


def run_cli(monkeypatch, args: list[str]) -> None:
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["detbench-dataset", *args])
    try:
        main()
    finally:
        GlobalHydra.instance().clear()


def test_console_script_writes_stats_and_grid(tmp_path, monkeypatch, capsys):
    samples = known_samples()
    write_yolo_txt(tmp_path / "yolo", samples[:1], NAMES, split="train")
    write_yolo_txt(tmp_path / "yolo", samples[1:], NAMES, split="val")
    out = tmp_path / "out"
    run_cli(monkeypatch, ["dataset=yolo_txt", f"dataset.root={tmp_path / 'yolo'}", "+split=all",
                          f"hydra.run.dir={out}"])
    printed = capsys.readouterr().out
    assert "dataset yolo_txt (split all): 2 images" in printed
    assert "6 annotated, 5 kept, 1 dropped" in printed and "zero_area 1" in printed
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert {"images", "boxes", "dropped_boxes", "per_class", "per_size"} <= set(stats)
    assert set(stats["per_size"]) == {"small", "medium", "large"}
    assert stats["boxes"] == 6 and stats["crowd"] == 0  # YOLO txt has no crowd flag
    with Image.open(out / "dataset_samples.png") as grid:
        assert grid.size[0] > 200 and grid.size[1] > 100


@pytest.mark.parametrize("name", ["voc", "bccd", "coco", "yolo_txt"])
def test_dataset_configs_need_a_root_and_name_the_path_tried(compose_config, tmp_path, name):
    cfg = compose_config([f"dataset={name}"])
    assert OmegaConf.is_missing(cfg.dataset, "root")
    with pytest.raises(ValueError, match="needs dataset.root"):
        describe_dataset(cfg.dataset, "val", tmp_path)
    cfg = compose_config([f"dataset={name}", f"dataset.root={tmp_path / 'nowhere'}"])
    with pytest.raises(Exception, match=str(tmp_path / "nowhere")):
        instantiate(cfg.dataset.val)


def test_voc_config_loads_written_data(compose_config, tmp_path):
    write_voc(tmp_path, known_samples()[:1], NAMES, "trainval")
    write_voc(tmp_path, known_samples()[1:], NAMES, "test")
    cfg = compose_config(["dataset=voc", f"dataset.root={tmp_path}",
                          "dataset.class_names=[cat,dog]"])
    train, val = instantiate(cfg.dataset.train), instantiate(cfg.dataset.val, transforms=None)
    assert len(train) == len(val) == 1 and train.class_names == NAMES


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (only in the detbench workspace, not a clone)")
    return path


def test_bccd_364_images_4888_boxes_2_zero_size_dropped(compose_config, tmp_path):
    cfg = compose_config(["dataset=bccd", f"dataset.root={shared('bccd')}"])
    stats = describe_dataset(cfg.dataset, "all", tmp_path, grid=4, decode_images=False)
    assert stats["images"] == 364 and stats["boxes"] == 4888
    assert stats["dropped_boxes"] == 2 and stats["dropped_by_reason"] == {"zero_area": 2}
    assert stats["per_class"] == {"RBC": 4153, "WBC": 372, "Platelets": 361}
    assert stats["per_size"] == {"small": 39, "medium": 1524, "large": 3323}
    assert {Path(e.split(":")[0]).name for e in stats["examples"]["zero_area"]} == {
        "BloodImage_00338.xml", "BloodImage_00343.xml"}


def test_coco_tiny_val_80_images_815_annotations_11_crowd(compose_config, tmp_path):
    cfg = compose_config(["dataset=coco", f"dataset.root={shared('coco_tiny')}"])
    stats = describe_dataset(cfg.dataset, "val", tmp_path, grid=4, decode_images=True)
    assert stats["images"] == 80 and stats["boxes"] == 815 and stats["crowd"] == 11
    assert stats["dropped_boxes"] == 0 and stats["image_errors"] == {}
    assert stats["per_size"] == {"small": 337, "medium": 297, "large": 170}
    assert len(stats["per_class"]) == 80
    val = instantiate(cfg.dataset.val)
    assert val.label_to_category_id[80] == 90  # sparse COCO ids
