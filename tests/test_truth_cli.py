"""Issue 28, late or unclear failures of the tools: detbench-eval on a ground truth without
annotations exits non-zero instead of printing NaN; string image ids are read as the ids they hold."""
from __future__ import annotations

import json

from experiments.evaluation.eval_cli import main
from experiments.evaluation.files import save_evaluation
from tests.test_eval_cli import small_run


def _files(tmp_path, edit):
    save_evaluation(small_run(), tmp_path)
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    dt = json.loads((tmp_path / "detections.json").read_text())
    edit(gt, dt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    return ["--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json")]


def test_ground_truth_without_annotations_is_an_error_not_nan(tmp_path, capsys):
    assert main(_files(tmp_path, lambda gt, dt: gt.update(annotations=[]))) == 2
    assert "has no (non-crowd) annotation" in capsys.readouterr().err


def test_string_image_ids_are_the_ids_they_hold(tmp_path, capsys):
    assert main(_files(tmp_path, lambda gt, dt: None)) == 0
    plain = json.loads(capsys.readouterr().out)

    def as_strings(gt, dt):
        for entry in (*gt["images"], *dt):
            entry["id" if "file_name" in entry or "height" in entry else "image_id"] = \
                str(entry.get("id", entry.get("image_id")))

    assert main(_files(tmp_path, as_strings)) == 0
    assert json.loads(capsys.readouterr().out) == plain
    assert main(_files(tmp_path, lambda gt, dt: dt[0].update(image_id="cat.jpg"))) == 2
    assert "image id 'cat.jpg' is not an integer" in capsys.readouterr().err


def test_detbench_coverage_says_an_input_error_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "experiments.studies.coverage_cli", "dataset=voc",
                           f"dataset.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "detbench-coverage: error:" in done.stderr and "nowhere" in done.stderr
