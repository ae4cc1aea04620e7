"""The report's training curves, from each run's ``train_log.csv`` (iteration, ``loss_*`` terms),
``val_log.csv`` (iteration, ``map``) and ``metrics.json`` (``train_flops_per_iteration``).

One row per setting, one panel per loss term (never summed: each term on its own log axis,
seeds as lines of one colour), against iterations (bottom axis) and training FLOPs (top axis,
iterations x that setting's FLOPs per iteration), the validation iterations marked as dotted
lines; a last row with every setting's validation AP (marked points) against iterations and
against training FLOPs, where settings of unequal cost compare at equal compute.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from analysis.plots import figure, save, series_style
from analysis.runs import read_csv, read_json

FLOP_UNITS = ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1.0, "FLOP"))


def flops_unit(largest: float) -> tuple[float, str]:
    """(divisor, name) of the largest SI unit that ``largest`` (FLOPs) reaches at least once."""
    return next(((d, n) for d, n in FLOP_UNITS if largest >= d), FLOP_UNITS[-1])


def _minor_label(value: float, _position=None) -> str:
    """Minor log ticks labelled at 2, 3 and 5 x a power of ten only (the others would overlap)."""
    mantissa = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
    return f"{value:.3g}" if round(mantissa, 6) in (2.0, 3.0, 5.0) else ""


def loss_terms(train) -> list[str]:
    """The ``loss_*`` columns of a train_log.csv (``loss``, the sum, only when there is no term)."""
    return [c for c in train.columns if c.startswith("loss_")] or [c for c in ("loss",) if c in train]


def _flops_per_iteration(run_dir: Path) -> float | None:
    value = (read_json(Path(run_dir) / "metrics.json") or {}).get("train_flops_per_iteration")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def training_logs(runs_by_group: dict[str, list[Path]]) -> dict[str, list[tuple]]:
    """group -> [(train_log or None, val_log or None, FLOPs per iteration or None)] per run, groups with a log only."""
    logs = {g: [(read_csv(d, "train_log.csv"), read_csv(d, "val_log.csv"), _flops_per_iteration(d)) for d in dirs]
            for g, dirs in runs_by_group.items()}
    return {g: runs for g, runs in logs.items() if any(t is not None or v is not None for t, v, _ in runs)}


def _loss_panel(ax, group: str, term: str, runs: list[tuple], colour_index: int, unit: tuple[float, str]) -> None:
    style = series_style(colour_index)
    for train, val, _ in runs:
        if train is not None and {"iteration", term} <= set(train.columns):
            ax.plot(train["iteration"], train[term], color=style["color"], linestyle=style["linestyle"])
        if val is not None and "iteration" in val:
            for iteration in val["iteration"]:
                ax.axvline(iteration, color="0.55", linestyle=":", linewidth=1)
    values = np.concatenate([line.get_ydata() for line in ax.lines if len(line.get_ydata()) > 2] or [np.ones(1)])
    if ax.lines and np.all(np.asarray(values, float) > 0):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    ax.set_title(f"{group}: {term.removeprefix('loss_')}", fontsize=11)
    ax.set_xlabel("iteration")
    per_iteration = next((f for _, _, f in runs if f), None)
    if per_iteration:
        divisor, name = unit
        top = ax.secondary_xaxis("top", functions=(lambda i: i * per_iteration / divisor,
                                                   lambda f: f * divisor / per_iteration))
        top.set_xlabel(f"training {name}", fontsize=9)
        top.tick_params(labelsize=8)


def _ap_panels(ax_iter, ax_flops, logs: dict[str, list[tuple]], unit: tuple[float, str]) -> None:
    divisor, name = unit
    for i, (group, runs) in enumerate(logs.items()):
        style = series_style(i)
        for seed, (_, val, per_iteration) in enumerate(runs):
            if val is None or not {"iteration", "map"} <= set(val.columns):
                continue
            kw = {"marker": style["marker"], "color": style["color"], "linestyle": style["linestyle"],
                  "label": group if seed == 0 else None}
            ax_iter.plot(val["iteration"], val["map"] * 100, **kw)
            if per_iteration:
                ax_flops.plot(val["iteration"] * per_iteration / divisor, val["map"] * 100, **kw)
    for ax, what in ((ax_iter, "iteration"), (ax_flops, f"training {name}")):
        ax.set_title("validation AP against " + ("iterations" if ax is ax_iter else "training FLOPs"), fontsize=11)
        ax.set_xlabel(what)
        ax.set_ylabel("COCO AP@[.5:.95] (%)")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation during training (no val_log.csv)" if ax is ax_iter else
                    "no train_flops_per_iteration\nin metrics.json", ha="center", va="center", transform=ax.transAxes)


def plot_training(runs_by_group: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """training.png / .pdf (see the module doc); [] when no run has a training or validation log."""
    logs = training_logs(runs_by_group)
    if not logs:
        return []
    terms = {g: list(dict.fromkeys(t for train, _, _ in runs if train is not None and "iteration" in train
                                   for t in loss_terms(train))) for g, runs in logs.items()}
    largest = max([len(train) and float(train["iteration"].max()) * f for runs in logs.values()
                   for train, _, f in runs if train is not None and f and "iteration" in train] or [1.0])
    unit = flops_unit(largest)
    rows = [g for g in logs if terms[g]]
    cols = max([len(terms[g]) for g in rows] + [2])
    with figure(len(rows) + 1, cols, figsize=(3.1 * cols + 0.6, 2.7 * (len(rows) + 1) + 0.8)) as (fig, axes):
        for r, group in enumerate(rows):
            for c in range(cols):
                if c < len(terms[group]):
                    _loss_panel(axes[r, c], group, terms[group][c], logs[group], list(logs).index(group), unit)
                else:
                    axes[r, c].set_visible(False)
            axes[r, 0].set_ylabel("training loss (log)")
        _ap_panels(axes[-1, 0], axes[-1, 1], logs, unit)
        for ax in axes[-1, 2:]:
            ax.set_visible(False)
        fig.suptitle("Training: each loss term against iterations (bottom) and training FLOPs (top); "
                     "dotted: validations", fontsize=13)
        return save(fig, out_dir, "training")
