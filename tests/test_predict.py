"""detbench-predict: a run folder's detector on images and videos the tests write themselves.

The run folder is real: a width-1/16 SSD300 checkpoint evaluated by ``experiments.run.run`` on
a synthetic validation set written as PNG in the COCO layout (lossless, so the run's evaluation
and detbench-predict see identical tensors), with sparse category ids so that the label ->
category-id mapping is exercised.
"""
from __future__ import annotations

import json
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from experiments.build import build_detector
from experiments.data.synthetic import CLASS_NAMES, SyntheticShapes
from experiments.data.writers import write_coco
from experiments.evaluation.eval_cli import main as detbench_eval
from experiments.inference import predictor as predictor_module
from experiments.inference.drawing import to_uint8
from experiments.inference.predict_cli import predict
from experiments.inference.run_loader import WeightsError
from experiments.inference.sources import SourceError
from experiments.run import run
from experiments.training.checkpoint import save_checkpoint

CATEGORY_IDS = [3, 7, 11, 13, 20]
FRAME_SIZE = (96, 128)  # H, W
EVAL_KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
             "mar_100", "voc07_map", "voc_map"]
RUN_OVERRIDES = ["detector=ssd300_cpu", "detector.model.width=0.0625", "dataset=coco", "device=cpu",
                 "dataset.train_annotations=annotations/train.json", "dataset.train_images=train",
                 "dataset.val_annotations=annotations/val.json", "dataset.val_images=val",
                 "train.batch_size=2", "train.log_every=100", "train.augmentation=none",
                 "eval.batch_size=2", "eval.samples=0"]


def _compose(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("conf", version_base="1.3"):
            return compose(name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def predict_with(out: Path, *overrides: str) -> dict:
    return predict(_compose("predict", ["device=cpu", "progress=false", *overrides]), out)


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    for split, n in (("train", 4), ("val", 4)):
        dataset = SyntheticShapes(n, FRAME_SIZE, split=split)
        write_coco(root, (dataset[i] for i in range(n)), CLASS_NAMES, f"annotations/{split}.json", split,
                   CATEGORY_IDS)
    return root


def make_run(folder: Path, data: Path, epochs: int = 0) -> dict:
    """A run folder: trained for ``epochs`` by run(), or (0) a seeded initialisation saved as
    checkpoints/last.pt and evaluated by run() with stages=[eval]; .hydra/config.yaml as Hydra saves it."""
    overrides = [*RUN_OVERRIDES, f"dataset.root={data}"]
    if epochs:
        cfg = _compose("config", [*overrides, f"train.epochs={epochs}", "stages=[train,eval]"])
    else:
        torch.manual_seed(0)
        model = build_detector(_compose("config", overrides).detector.model, num_classes=len(CLASS_NAMES))
        # beside the folder: run() refuses a folder that already holds checkpoints/ (a previous run)
        initial = folder.parent / f"{folder.name}_initial.pt"
        save_checkpoint(initial, {"model": model.state_dict(), "optimizer": {}, "epoch": 0, "iteration": 0})
        cfg = _compose("config", [*overrides, "stages=[eval]", f"weights={initial}"])
    metrics = run(cfg, folder)
    assert metrics["status"] == "ok", metrics.get("error")
    if not epochs:
        (folder / "checkpoints").mkdir(exist_ok=True)
        shutil.copy(initial, folder / "checkpoints/last.pt")
    (folder / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, folder / ".hydra/config.yaml")
    return metrics


@pytest.fixture(scope="module")
def tiny_run(coco_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    make_run(folder, coco_data)
    return folder


def write_video(path: Path, frames: list[torch.Tensor], codec: str = "libx264", fps: int = 25) -> Path:
    """Encode float [3, H, W] frames with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[-2:]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(to_uint8(image).permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def read_video(path: Path, times: bool = False):
    """(frames uint8 [H, W, 3], average rate), and each frame's time in seconds if ``times``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(stream)]
        frames = [f for f, _ in decoded]
        return (frames, stream.average_rate, [t for _, t in decoded]) if times else (frames, stream.average_rate)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    dataset = SyntheticShapes(5, FRAME_SIZE, split="test")
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", [dataset[i][0] for i in range(5)])


def rescore(predictions: Path, ground_truth: Path, tmp_path: Path) -> dict:
    """predictions.json (file names of the COCO layout: <image id, 12 digits>.png) -> detbench-eval's metrics."""
    records = json.loads(predictions.read_text())
    for record in records:
        record["image_id"] = int(Path(record.pop("file_name")).stem)
    (tmp_path / "dt.json").write_text(json.dumps(records))
    assert detbench_eval(["--gt", str(ground_truth), "--dt", str(tmp_path / "dt.json"),
                          "--out", str(tmp_path / "rescored.json")]) == 0
    return json.loads((tmp_path / "rescored.json").read_text())


def check_rescored_equals_run(run_dir: Path, data: Path, tmp_path: Path) -> dict:
    out = tmp_path / "predicted"
    stats = predict_with(out, f"weights={run_dir}", f"source={data / 'val'}", "score_thresh=0", "batch_size=2")
    assert stats["frames"] == 4 and stats["skipped"] == 0
    own = json.loads((run_dir / "metrics.json").read_text())
    rescored = rescore(out / "predictions.json", run_dir / "ground_truth.json", tmp_path)
    for key in EVAL_KEYS:
        assert rescored[key] == pytest.approx(own[key], abs=1e-9), key
    predicted = json.loads((out / "predictions.json").read_text())
    assert len(predicted) == len(json.loads((run_dir / "detections.json").read_text())) > 0
    assert {r["category_id"] for r in predicted} <= set(CATEGORY_IDS)
    for name in sorted(p.name for p in (data / "val").iterdir()):
        assert Image.open(out / "images" / name).size == (FRAME_SIZE[1], FRAME_SIZE[0])
    return own


def test_predictions_rescore_to_the_runs_own_evaluation(tiny_run, coco_data, tmp_path):
    check_rescored_equals_run(tiny_run, coco_data, tmp_path)


def test_a_trained_run_rescores_to_its_own_nonzero_ap(coco_data, tmp_path):
    own = make_run(tmp_path / "trained", coco_data, epochs=5)
    own = check_rescored_equals_run(tmp_path / "trained", coco_data, tmp_path)
    assert own["map"] > 0


def test_video_keeps_frame_count_size_and_fps(tiny_run, video, tmp_path):
    stats = predict_with(tmp_path, f"weights={tiny_run / 'checkpoints/last.pt'}", f"source={video}", "score_thresh=0")
    frames, fps, times = read_video(tmp_path / "clip.mp4", times=True)
    source, source_fps, source_times = read_video(video, times=True)
    assert times == pytest.approx(source_times) and times == pytest.approx([i / 25 for i in range(5)])
    assert len(frames) == len(source) == stats["frames"] == stats["video_frames"] == 5
    assert frames[0].shape == source[0].shape == (*FRAME_SIZE, 3) and fps == source_fps == 25
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 100 for a, b in zip(frames, source)), "boxes drawn"
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert {r["frame_index"] for r in records} == set(range(5))
    assert {round(r["timestamp_s"], 6) for r in records} == {i / 25 for i in range(5)}
    for stage in ("decode", "decode_wait", "preprocess", "network", "postprocess", "drawing", "encode"):
        assert stats["stages_ms_per_frame"][stage] >= 0
    assert stats["stages_ms_per_frame"]["network"] > 0 and stats["fps_end_to_end"] > 0
    assert stats == json.loads((tmp_path / "predict_stats.json").read_text())


def test_every_nth_frame_and_max_frames(tiny_run, video, tmp_path):
    stats = predict_with(tmp_path / "nth", f"weights={tiny_run}", f"source={video}", "every_nth_frame=2")
    frames, fps, times = read_video(tmp_path / "nth/clip.mp4", times=True)
    assert len(frames) == stats["frames"] == 3 and fps == Fraction(25, 2)
    assert times == pytest.approx([0, 0.08, 0.16]), "source frames 0, 2, 4 keep their times"
    records = json.loads((tmp_path / "nth/predictions.json").read_text())
    assert {r["frame_index"] for r in records} <= {0, 2, 4}
    stats = predict_with(tmp_path / "max", f"weights={tiny_run}", f"source={video}", "max_frames=2")
    assert stats["frames"] == 2 and len(read_video(tmp_path / "max/clip.mp4")[0]) == 2


def test_side_by_side_video_puts_detectors_next_to_each_other(tiny_run, video, tmp_path):
    stats = predict_with(tmp_path, f"weights=[{tiny_run},{tiny_run / 'checkpoints/last.pt'}]", f"source={video}",
                         "score_thresh=0.1", "batch_size=2")
    frames, _ = read_video(tmp_path / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (FRAME_SIZE[0], 2 * FRAME_SIZE[1], 3)
    first, second = (json.loads((tmp_path / d["predictions"]).read_text()) for d in stats["detectors"])
    assert first == second and all(r["score"] >= 0.1 for r in first)


def test_classes_subset_keeps_only_those_classes(tiny_run, coco_data, tmp_path):
    predict_with(tmp_path / "all", f"weights={tiny_run}", f"source={coco_data / 'val'}", "score_thresh=0")
    predict_with(tmp_path / "some", f"weights={tiny_run}", f"source={coco_data / 'val'}", "score_thresh=0",
                 "classes=[square,cross]")
    every = json.loads((tmp_path / "all/predictions.json").read_text())
    some = json.loads((tmp_path / "some/predictions.json").read_text())
    wanted = {CATEGORY_IDS[1], CATEGORY_IDS[4]}
    assert some and some == [r for r in every if r["category_id"] in wanted] and len(some) < len(every)


def test_unknown_class_names_are_an_error_listing_the_checkpoints_classes(tiny_run, coco_data, tmp_path):
    with pytest.raises(WeightsError, match=r"\['person'\] not among the classes .*circle"):
        predict_with(tmp_path, f"weights={tiny_run}", f"source={coco_data / 'val'}", "classes=[circle,person]")
    with pytest.raises(WeightsError, match="selects no class"):
        predict_with(tmp_path, f"weights={tiny_run}", f"source={coco_data / 'val'}", "classes=[]")


def test_folder_recursion_glob_odd_modes_and_a_corrupt_image(tiny_run, coco_data, tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    images = sorted((coco_data / "val").glob("*.png"))
    shutil.copy(images[0], folder / "a.png")
    Image.open(images[1]).convert("L").save(folder / "nested/gray.jpg")
    Image.open(images[2]).convert("RGBA").save(folder / "nested/rgba.png")
    (folder / "nested/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    stats = predict_with(tmp_path / "out", f"weights={tiny_run}", f"source={folder}", "score_thresh=0")
    assert stats["frames"] == 3 and stats["skipped"] == 1
    assert "broken.png" in stats["skipped_examples"][0]["error"]
    names = {r["file_name"] for r in json.loads((tmp_path / "out/predictions.json").read_text())}
    assert names == {"a.png", "nested/gray.jpg", "nested/rgba.png"}
    assert (tmp_path / "out/images/nested/rgba.png").is_file()
    stats = predict_with(tmp_path / "glob", f"weights={tiny_run}", f"source={folder}/**/*.png")
    assert stats["frames"] == 2 and stats["skipped"] == 1  # a.png, rgba.png; broken.png skipped


def test_an_unreadable_video_frame_is_skipped_and_counted(tiny_run, tmp_path):
    dataset = SyntheticShapes(5, FRAME_SIZE, split="test")
    path = write_video(tmp_path / "clip.avi", [dataset[i][0] for i in range(5)], codec="mjpeg")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG SOI markers
    assert len(starts) == 5
    data[starts[2]:starts[3] - 8] = bytes(starts[3] - 8 - starts[2])  # frame 2's JPEG zeroed
    path.write_bytes(bytes(data))
    stats = predict_with(tmp_path / "out", f"weights={tiny_run}", f"source={path}", "score_thresh=0")
    assert stats["frames"] == 4 and stats["skipped"] == 1 and "frame 2" in stats["skipped_examples"][0]["name"]
    assert len(read_video(tmp_path / "out/clip.mp4")[0]) == 4
    records = json.loads((tmp_path / "out/predictions.json").read_text())
    assert {r["frame_index"] for r in records} == {0, 1, 3, 4}


@pytest.mark.parametrize("case", ["missing", "empty_folder", "no_glob_match", "not_media", "garbage_video"])
def test_bad_sources_are_errors_naming_the_path(tiny_run, tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.mp4").write_bytes(b"definitely not a video" * 50)
    source, message = {"missing": ("nowhere/clip.mp4", "does not exist"),
                       "empty_folder": ("empty", "holds no image"),
                       "no_glob_match": ("empty/*.jpg", "holds no image"),
                       "not_media": ("notes.txt", "neither an image"),
                       "garbage_video": ("broken.mp4", "cannot be opened")}[case]
    with pytest.raises(SourceError, match=message) as error:
        predict_with(tmp_path / "out", f"weights={tiny_run}", f"source={tmp_path / source}")
    assert str(tmp_path / source.split("/")[0]) in str(error.value)


def test_weights_of_a_failed_run_are_refused(tiny_run, video, tmp_path):
    failed = tmp_path / "failed"
    shutil.copytree(tiny_run, failed)
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "NonFiniteLossError: loss is nan"}))
    with pytest.raises(WeightsError, match="failed.*NonFiniteLossError"):
        predict_with(tmp_path / "out", f"weights={failed / 'checkpoints/last.pt'}", f"source={video}")


def test_a_checkpoint_outside_a_run_folder_is_an_error(tiny_run, video, tmp_path):
    shutil.copy(tiny_run / "checkpoints/last.pt", tmp_path / "loose.pt")
    with pytest.raises(WeightsError, match="no run folder"):
        predict_with(tmp_path / "out", f"weights={tmp_path / 'loose.pt'}", f"source={video}")


def test_ctrl_c_keeps_what_was_written(tiny_run, video, tmp_path, monkeypatch):
    original, calls = predictor_module.draw_detections, []

    def draw_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(predictor_module, "draw_detections", draw_then_interrupt)
    stats = predict_with(tmp_path, f"weights={tiny_run}", f"source={video}", "score_thresh=0")
    assert stats["interrupted"] and stats["frames"] == 2
    assert len(read_video(tmp_path / "clip.mp4")[0]) == 2
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert {r["frame_index"] for r in records} == {0, 1}, "frame 2 was detected but never written: not reported"
    assert json.loads((tmp_path / "predict_stats.json").read_text())["interrupted"]


def test_the_hydra_entry_point(tiny_run, coco_data, tmp_path, monkeypatch):
    """``detbench-predict`` as the console script calls it (in-process: torch imports slowly)."""
    from experiments.inference.predict_cli import main

    image = sorted((coco_data / "val").glob("*.png"))[0]

    def command_line(*arguments: str) -> None:
        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["detbench-predict", f"weights={tiny_run}", "device=cpu", *arguments])
        main()

    command_line(f"source={image}", f"hydra.run.dir={tmp_path / 'ok'}", "progress=false")
    assert (tmp_path / "ok/images" / image.name).is_file() and (tmp_path / "ok/predict_stats.json").is_file()
    with pytest.raises(SystemExit, match="detbench-predict: error: .*nothing.jpg does not exist"):
        command_line(f"source={tmp_path / 'nothing.jpg'}", f"hydra.run.dir={tmp_path / 'bad'}")
    GlobalHydra.instance().clear()


def test_video_writer_keeps_times_past_the_encoders_lookahead(tmp_path):
    """x264 holds back ~40 frames before its first packet; the muxer then changes the stream's
    time base (mp4: 1/12800), which must not change the frames' times."""
    from experiments.inference.outputs import VideoWriter

    writer = VideoWriter(tmp_path / "long.mp4", Fraction(25, 2))
    generator = torch.Generator().manual_seed(0)
    positions = [k for k in range(120) if k != 50]  # position 50 missing: a skipped frame
    for k in positions:
        writer.write(torch.randint(0, 256, (3, 33, 47), generator=generator, dtype=torch.uint8), k)
    writer.close()
    frames, _, times = read_video(tmp_path / "long.mp4", times=True)
    assert len(frames) == len(positions) and frames[0].shape == (33, 47, 3)  # odd size: 4:4:4
    assert times == pytest.approx([k * 2 / 25 for k in positions])


def test_rebuilding_keeps_the_normalisation_the_backbone_weights_chose_without_fetching_them():
    from experiments.inference.run_loader import rebuild_detector

    cfg = _compose("config", ["detector=ssd300_cpu", "detector.model.width=0.0625", "detector.model.batch_norm=false",
                              "detector.model.backbone_weights=IMAGENET1K_FEATURES"])
    model = rebuild_detector(cfg.detector.model, len(CLASS_NAMES))  # no download: the offline machine would fail
    member = model.backbone_weights_enum()["IMAGENET1K_FEATURES"]
    mean, std = member.transforms().mean, member.transforms().std
    torch.testing.assert_close(model.image_mean.flatten(), torch.tensor(mean))
    torch.testing.assert_close(model.image_std.flatten(), torch.tensor(std))
    assert model.weights_source == "random"


def test_operating_point_threshold_is_each_runs_best_f1_on_val(tiny_run, coco_data, tmp_path):
    from analysis.operating_point import run_operating_point

    point = run_operating_point(tiny_run)
    stats = predict_with(tmp_path, f"weights={tiny_run}", f"source={coco_data / 'val'}", "score_thresh=operating_point")
    assert stats["detectors"][0]["score_thresh"] == pytest.approx(point["threshold"])
    scores = [r["score"] for r in json.loads((tmp_path / "predictions.json").read_text())]
    assert all(s >= point["threshold"] - 1e-6 for s in scores)


def _strip_height(image: torch.Tensor, column: int, rows: slice, colour: tuple[int, int, int]) -> int:
    """How many of ``rows`` have ``colour`` at ``column`` (a label's strip, in its padding column)."""
    return int((image[:, rows, column] == torch.tensor(colour, dtype=torch.uint8)[:, None]).all(0).sum())


def test_ground_truth_is_dashed_green_with_a_legend_and_labels_are_readable():
    from experiments.inference.drawing import MIN_FONT_PX, PALETTE, TRUTH, draw_detections, draw_truth

    black = torch.zeros(3, 120, 160, dtype=torch.uint8)
    drawn = draw_truth(black, torch.tensor([[20.0, 10.0, 100.0, 60.0]]), ["circle"])
    green = (drawn == torch.tensor(TRUTH, dtype=torch.uint8)[:, None, None]).all(0)   # [H, W]
    top_edge = green[10, 20:101]
    assert 0.3 < top_edge.float().mean() < 0.9, "a dashed line: some pixels green, some gaps"
    assert not green[35, 40:80].any(), "the box's inside is not painted"
    assert green[61:, 20:40].any(), "'GT circle' on a green strip under the box"
    assert _strip_height(drawn, 21, slice(62, 120), TRUTH) >= MIN_FONT_PX
    assert green[-12:, -130:].any() and (drawn[:, -3, -3] == 0).all(), "the legend in the bottom-right corner"

    detection = {"boxes": torch.tensor([[30.0, 40.0, 90.0, 100.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([2])}
    labelled = draw_detections(black, detection, ["circle", "square"])
    orange = tuple(int(PALETTE[1][i:i + 2], 16) for i in (1, 3, 5))
    assert _strip_height(labelled, 31, slice(0, 40), orange) >= MIN_FONT_PX, "label strip above the box: readable"


def test_predict_draws_the_ground_truth_the_annotations_hold(tiny_run, coco_data, tmp_path):
    from experiments.inference.drawing import TRUTH

    names = sorted(p.name for p in (coco_data / "val").glob("*.png"))
    height, width = FRAME_SIZE
    annotations = {"images": [{"id": 1, "file_name": names[0], "height": height, "width": width},
                              {"id": 2, "file_name": names[1], "height": height + 1, "width": width}],
                   "categories": [{"id": 5, "name": "blob"}],
                   "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 30, 60, 40]},
                                   {"id": 2, "image_id": 2, "category_id": 5, "bbox": [10, 30, 60, 40]}]}
    (tmp_path / "truth.json").write_text(json.dumps(annotations))
    stats = predict_with(tmp_path / "out", f"weights={tiny_run}", f"source={coco_data / 'val'}", "score_thresh=1",
                         f"truth={tmp_path / 'truth.json'}")
    assert stats["frames_with_truth"] == 1, "the second image is annotated at another size: not drawn"
    drawn = np.asarray(Image.open(tmp_path / "out/images" / names[0]))
    assert (drawn[30, 10:71] == TRUTH).all(-1).any(), "the box's top edge in ground-truth green"
    assert not (np.asarray(Image.open(tmp_path / "out/images" / names[1])) == TRUTH).all(-1).any()

    auto = predict_with(tmp_path / "auto", f"weights={tiny_run}", f"source={coco_data / 'val'}", "score_thresh=1")
    assert auto["truth"] == str(tiny_run / "ground_truth.json") and auto["frames_with_truth"] == 4
    off = predict_with(tmp_path / "off", f"weights={tiny_run}", f"source={coco_data / 'val'}", "truth=null")
    assert off["truth"] is None and off["frames_with_truth"] == 0


def test_label_font_grows_with_the_image_and_never_falls_below_14_px():
    from experiments.inference.drawing import font_px

    assert font_px(96, 128) == 14 and font_px(300, 300) == 14 and font_px(1080, 1920) == round(1080 / 25)
