"""Issue 20: bad image files (missing, empty, truncated, undecodable, misnamed) under
``bad_images: error | skip | repair``, found by the pre-flight scan or at decode time, and the
runner's data checks (class map, empty splits, no objects, split.json, counts in metrics.json)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.data.images import ImageFileError
from experiments.data.prepare import DataError, NoObjectsError, decode_failures, prepare_datasets
from experiments.data.scan import apply_bad_image_policy, scan_images
from experiments.data.voc import VOCDetection
from experiments.run import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jpeg_bytes(seed: int, size=(24, 32)) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def flat_voc(root: Path, count: int, objects: bool = True) -> Path:
    """``count`` JPEGs a000.jpg.. with their XML beside them (LabelImg's layout), one box each."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"a{i:03d}.jpg").write_bytes(jpeg_bytes(i))
        obj = ("<object><name>cell</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax>"
               "<ymax>18</ymax></bndbox></object>") if objects else ""
        (root / f"a{i:03d}.xml").write_text(
            f"<annotation><filename>a{i:03d}.jpg</filename><size><width>32</width>"
            f"<height>24</height></size>{obj}</annotation>")
    return root


def damage(root: Path) -> dict[str, Path]:
    """Damage four of the images, one way each."""
    files = {"zero_byte": root / "a001.jpg", "truncated": root / "a002.jpg",
             "undecodable": root / "a003.jpg", "wrong_extension": root / "a004.jpg"}
    files["zero_byte"].write_bytes(b"")
    files["truncated"].write_bytes(jpeg_bytes(2)[:-300])  # cut in the pixel data
    files["undecodable"].write_bytes(b"<html>404 Not Found</html>")
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(buffer, "PNG")
    files["wrong_extension"].write_bytes(buffer.getvalue())
    return files


def test_scan_finds_each_kind_of_bad_file(tmp_path):
    root = flat_voc(tmp_path, 6)
    files = damage(root)
    result = scan_images([*sorted(root.glob("*.jpg")), root / "gone.jpg"])
    assert result.images == 7
    assert result.counts == {"zero_byte": 1, "truncated": 1, "undecodable": 1,
                             "wrong_extension": 1, "missing": 1}
    reasons = {p.name: r for p, r, _ in result.bad}
    assert reasons == {**{p.name: r for r, p in files.items()}, "gone.jpg": "missing"}
    assert result.modes == {"RGB": 4}  # a000, a005, the PNG named .jpg, the truncated JPEG (header read)


def both_splits(root: Path, **kwargs) -> list[VOCDetection]:
    return [VOCDetection(root, class_names=["cell"], split=s, **kwargs) for s in ("train", "val")]


@pytest.mark.parametrize("policy, kept", [("skip", 2), ("repair", 4)])
def test_bad_image_policy_skip_or_repair(tmp_path, policy, kept):
    root = flat_voc(tmp_path, 6)
    damage(root)
    splits = both_splits(root, bad_images=policy)
    assert sum(map(len, splits)) == 6  # each file exists: only the scan knows which are bad
    infos = [apply_bad_image_policy(ds, scan_images(ds), "split") for ds in splits]
    assert sum(map(len, splits)) == kept
    assert sum(i["skipped"] for i in infos) == 6 - kept and sum(i["repaired"] for i in infos) == kept - 2
    assert sum(v for ds in splits for k, v in ds.skips.counts.items() if k.startswith("image_")) == 6 - kept
    for ds in splits:
        for i in range(len(ds)):  # every image left decodes (a repaired truncated JPEG too)
            image, target = ds[i]
            assert image.shape == (3, 24, 32) and len(target["boxes"]) == 1
        assert len(ds.image_ids) == len(ds) == len(ds.split_info["ids"])


def test_bad_image_policy_error_lists_the_files_before_training(tmp_path):
    root = flat_voc(tmp_path, 6)
    damage(root)
    images = sorted(root.glob("*.jpg"))
    with pytest.raises(ImageFileError, match=r"4 bad image file.*a001.jpg: zero_byte.*a002.jpg: "
                                             r"truncated.*bad_images=skip"):
        apply_bad_image_policy(object(), scan_images(images), "train split")


def test_decode_failure_after_the_scan_serves_the_next_image_and_is_counted(tmp_path):
    root = flat_voc(tmp_path, 3)
    data = bytearray(jpeg_bytes(1))
    data[300:420] = bytes(120)  # inside the entropy-coded data: the header and end marker stay
    (root / "a001.jpg").write_bytes(data)
    png = root / "a002.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), 7, np.uint8)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    raw[raw.index(b"IDAT") + 8] ^= 0xFF  # a bad CRC: Pillow refuses it only when decoding
    png.write_bytes(bytes(raw))
    ds, val = both_splits(root, bad_images="skip")
    ds.records = sorted(ds.records + val.records, key=lambda r: r.path)  # all three in one
    assert [r.path.name for r in ds.records] == ["a000.jpg", "a001.jpg", "a002.jpg"]
    assert scan_images(ds).counts == {"wrong_extension": 1}  # the headers and end markers are fine
    ds.decode_log = tmp_path / "bad_images.log"
    served = [ds[i][1]["image_id"] for i in range(len(ds))]
    failed = ds.skips.counts["image_decode_failed"]
    assert failed >= 1 and served[2] == ds.records[0].image_id  # a002 failed: a000 is served
    assert decode_failures(tmp_path)["decode_failures"] == failed
    ds.bad_images = "error"
    with pytest.raises(ImageFileError, match="a002.jpg"):
        ds[2]


# ---- the runner's checks -----------------------------------------------------------------
def test_prepare_writes_class_map_split_and_counts(tmp_path):
    root = flat_voc(tmp_path / "data", 10)
    damage(root)
    train, val = (VOCDetection(root, split=s, bad_images="skip") for s in ("train", "val"))
    out = tmp_path / "run"
    out.mkdir()
    entries = prepare_datasets(train, val, out)
    assert entries["classes"] == "cell" and entries["num_classes"] == 1
    assert entries["class_map"] == [{"label": 1, "name": "cell", "category_id": 1}]
    assert json.loads((out / "class_map.json").read_text()) == entries["class_map"]
    split = json.loads((out / "split.json").read_text())
    assert split["split_id"] == entries["split_id"] and len(entries["split_id"]) == 12
    assert sorted(split["train"]["ids"] + split["val"]["ids"]) == sorted(train.image_ids + val.image_ids)
    assert entries["train_images"] + entries["val_images"] == 6  # 4 of 10 skipped
    skipped = sum(int(part.split()[-1]) for part in entries["data_skipped"].split(", "))
    assert skipped == 4 and "image_truncated" in entries["data_skipped"]
    assert entries["val_objects"] == entries["val_images"]


def test_prepare_stops_on_disagreeing_class_maps_no_boxes_and_no_objects(tmp_path):
    root = flat_voc(tmp_path / "data", 5)
    out = tmp_path / "run"
    out.mkdir()
    train = VOCDetection(root, split="train", class_names=["cell", "other"])
    val = VOCDetection(root, split="val", class_names=["other", "cell"])
    with pytest.raises(DataError, match="disagree on the class map"):
        prepare_datasets(train, val, out)
    empty = flat_voc(tmp_path / "empty", 5, objects=False)
    with pytest.raises(DataError, match="train split has no box left"):
        prepare_datasets(VOCDetection(empty, split="train", class_names=["cell"]),
                         VOCDetection(root, split="val", class_names=["cell"]), out)
    with pytest.raises(NoObjectsError, match=r"validation split \(1 images\) has no object"):
        prepare_datasets(None, VOCDetection(empty, split="val", class_names=["cell"]), out)


RUN = ["device=cpu", "detector=yolov1_cpu", "dataset=voc", "train.epochs=1", "train.batch_size=2",
       "train.augmentation=none", "train.log_every=1", "eval.batch_size=2", "eval.samples=1",
       "stages=[train,eval]"]


def test_run_on_loose_data_with_a_bad_image_and_a_split_without_objects(compose_config, tmp_path):
    root = flat_voc(tmp_path / "data", 8)
    (root / "a003.jpg").write_bytes(jpeg_bytes(3)[:300])
    cfg = compose_config([*RUN, f"dataset.root={root}", "dataset.bad_images=skip"])
    metrics = run(cfg, tmp_path / "ok")
    assert metrics["status"] == "ok", metrics.get("error")
    on_disk = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert on_disk["classes"] == "cell" and on_disk["data_skipped"] == "image_truncated 1"
    assert on_disk["train_images"] + on_disk["val_images"] == 7 and on_disk["decode_failures"] == 0
    assert (tmp_path / "ok" / "split.json").is_file() and (tmp_path / "ok" / "class_map.json").is_file()
    empty = flat_voc(tmp_path / "empty", 4, objects=False)
    cfg = compose_config([*RUN, f"dataset.root={empty}", "dataset.class_names=[cell]"])
    metrics = run(cfg, tmp_path / "none")
    assert metrics["status"] == "failed" and "train split has no box left" in metrics["error"]
    assert "map" not in metrics  # nothing trained, no NaN AP reported as a result
    cfg = compose_config([*RUN, f"dataset.root={empty}", "dataset.class_names=[cell]", "stages=[eval]"])
    metrics = run(cfg, tmp_path / "eval_only")
    assert metrics["status"] == "no_objects" and "no object to evaluate" in metrics["error"]


def test_sample_grid_draws_a_bad_image_as_unreadable(tmp_path):
    from experiments.data.stats import draw_sample_grid

    root = flat_voc(tmp_path / "data", 4)
    (root / "a001.jpg").write_bytes(b"garbage")
    ds = VOCDetection(root, class_names=["cell"], split="train", val_fraction=0.25)
    assert "a001.jpg" in {r.path.name for r in ds.records}
    assert draw_sample_grid(ds, tmp_path / "grid.png", num_images=4) == list(range(len(ds)))
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_runs_table_shows_the_data_columns_when_runs_have_them():
    import pandas as pd

    from analysis.summary import runs_table

    runs = pd.DataFrame([{"run": "0-a", "detector": "a", "dataset": "voc", "variant": "", "seed": 0,
                          "status": "ok", "error": None, "classes": "cell", "split_id": "c110908f22bc",
                          "train_images": 292, "val_images": 72, "data_skipped": "image_truncated 1"},
                         {"run": "1-b", "detector": "b", "dataset": "voc", "variant": "", "seed": 0,
                          "status": "no_objects", "error": "NoObjectsError: the validation split"}])
    table = runs_table(runs)
    assert {"classes", "split_id", "train_images", "data_skipped"} <= set(table.shown.columns)
    assert "data_dropped" not in table.shown.columns  # absent everywhere: not shown
    assert table.shown.loc[0, "data_skipped"] == "image_truncated 1"
    assert "1 not ok" in table.title
