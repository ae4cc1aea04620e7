"""``detbench-predict``: the Hydra entry point (``conf/predict.yaml``).

``predict(cfg, output_dir)`` is a plain function the tests call; ``main`` is a thin
``@hydra.main`` around it that exits with a one-line message on bad input and with status 130
after a Ctrl-C (the outputs written so far are kept).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.inference.predictor import OPERATING_POINT, PredictOptions, Predictor
from experiments.job.process import resolve_device

log = logging.getLogger("detbench")


def predict(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run detbench-predict with ``cfg`` (conf/predict.yaml's keys); returns predict_stats.json's dict."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    weights = cfg.weights
    weights = [str(w) for w in weights] if isinstance(weights, (list, ListConfig)) else [str(weights)]
    if not weights:
        raise ValueError("weights: give a run folder, a checkpoint, or a list of them")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    classes = OmegaConf.to_container(cfg.classes) if isinstance(cfg.classes, ListConfig) else cfg.classes
    if isinstance(classes, str):
        classes = [classes]
    threshold = cfg.score_thresh if cfg.score_thresh == OPERATING_POINT else float(cfg.score_thresh)
    options = PredictOptions(
        score_thresh=threshold, classes=classes, batch_size=int(cfg.batch_size),
        save_images=bool(cfg.save_images), save_video=bool(cfg.save_video),
        every_nth_frame=int(cfg.every_nth_frame), max_frames=int(cfg.max_frames),
        video_codec=str(cfg.video_codec), prefetch_frames=int(cfg.prefetch_frames), progress=bool(cfg.progress),
        truth=None if cfg.get("truth") in (None, False) else str(cfg.truth))
    stats = Predictor(weights, str(cfg.source), out, resolve_device(cfg.device), options).run()
    log.info("%d frames (%d skipped) at %.1f fps end to end; outputs in %s", stats["frames"], stats["skipped"],
             stats["fps_end_to_end"] or 0.0, out)
    return stats


@hydra.main(config_path="../../conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        stats = predict(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        sys.exit(f"detbench-predict: error: {error}")
    if stats["interrupted"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
