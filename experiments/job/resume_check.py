"""What a resume may change: the settings a checkpoint was trained with are compared with the
new command's, so ``resume=true`` never trains on old values while recording new ones.

The saved settings are the run folder's ``.hydra/config.yaml`` (``experiments.job.layout``,
written by ``experiments.run`` once a job owns the folder). Keys are compared flat and resolved
(``train.optimizer.lr``). A key under :data:`COMPARED` that differs alters results and refuses
the resume, unless it is in :data:`MORE_WORK` (a finished run asked for more: the documented
resume) or :data:`NO_EFFECT` (logging and loader plumbing), or the command passes
``resume_changes=allow`` (the changes are then applied and listed in metrics.json as
``resume_changes``). Keys outside ``COMPARED`` (``eval``, ``bench``, ``robustness``, ``stages``,
``device``) act on stages that run again in full on resume.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.job.layout import SAVED_CONFIG

COMPARED = ("dataset", "detector", "train", "seed", "deterministic", "weights")
MORE_WORK = ("train.epochs", "train.iterations", "train.max_time_s")
NO_EFFECT = ("train.num_workers", "train.log_every", "train.val_every", "train.val_images")
CHOICES = ("refuse", "allow")


def _flat(values, prefix: str = "") -> dict[str, object]:
    if isinstance(values, dict):
        out: dict[str, object] = {}
        for key, value in values.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): values}


def _plain(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:   # an interpolation that only Hydra resolves (${hydra:...}): compare unresolved
        return OmegaConf.to_container(cfg, resolve=False)


def result_changes(saved: DictConfig, new: DictConfig) -> list[str]:
    """``key: old -> new`` for each compared key whose value differs (sorted)."""
    old = _flat({k: v for k, v in _plain(saved).items() if k in COMPARED})
    now = _flat({k: v for k, v in _plain(new).items() if k in COMPARED})
    skip = (*MORE_WORK, *NO_EFFECT)
    return [f"{key}: {old.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
            for key in sorted(set(old) | set(now)) if key not in skip and old.get(key) != now.get(key)]


def check_resume(out: Path, cfg: DictConfig) -> tuple[str | None, list[str]]:
    """(a refusal or None, the result-changing changes) of resuming the run in ``out`` with
    ``cfg``; a folder without saved settings (older runs) is resumed unchecked."""
    choice = cfg.get("resume_changes") or "refuse"
    if choice not in CHOICES:
        return f"refused: resume_changes={choice!r}: choose one of {list(CHOICES)}", []
    path = Path(out) / SAVED_CONFIG
    if not path.is_file():
        return None, []
    changes = result_changes(OmegaConf.load(path), cfg)
    if changes and choice != "allow":
        return (f"refused: resume=true would change {len(changes)} setting(s) the run in {out} was "
                f"trained with ({path}): {'; '.join(changes)}. The checkpoint holds the old ones: "
                "drop the change(s), start a new run folder, or pass resume_changes=allow to continue "
                "with the new values (recorded in metrics.json as resume_changes)"), changes
    return None, changes
