"""Report figures: method comparison with error bars, per-group accuracy heat maps, GroupDRO weights."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from grouprobust.errors import GroupRobustError  # noqa: E402
from grouprobust.history import HISTORY, load_history  # noqa: E402
from grouprobust.output import save_figure_atomic, tight_layout  # noqa: E402

if TYPE_CHECKING:
    from grouprobust.sweep.report import Report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def method_comparison(summary: pd.DataFrame, path: Path) -> Path:
    """Bar chart per dataset: test worst-group and average accuracy (%) per method, error bars = std over seeds."""
    datasets = list(summary["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(4.0, 1.2 * len(summary) + 2), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = summary[summary["dataset"] == dataset].set_index("method")
        means = 100 * rows[["test_worst_group_acc_mean", "test_avg_acc_mean"]]
        stds = 100 * rows[["test_worst_group_acc_std", "test_avg_acc_std"]].fillna(0.0)
        means.columns = stds.columns = ["worst-group", "average"]
        means.plot.bar(yerr=stds, ax=ax, capsize=3, rot=0)
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
    tight_layout(fig)
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def per_group_heatmap(per_group: pd.DataFrame, dataset: str, path: Path) -> Path:
    """Heat map of test accuracy (%) per method (rows) and group (columns), mean over seeds."""
    table = per_group[per_group["dataset"] == dataset].pivot(index="method", columns="group", values="test_acc_mean")
    table = table[list(dict.fromkeys(per_group[per_group["dataset"] == dataset]["group"]))]
    fig, ax = plt.subplots(figsize=(min(20.0, 2 + 0.7 * table.shape[1]), 1 + 0.5 * table.shape[0]))
    image = ax.imshow(100 * table.to_numpy(dtype=float), vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=90 if table.shape[1] > 8 else 0)
    if table.shape[1] <= 12:
        for (i, j), value in np.ndenumerate(100 * table.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black")
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    ax.set_title(f"{dataset}: per-group test accuracy")
    tight_layout(fig)
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def group_weight_history(run_paths: list[str]) -> pd.DataFrame | None:
    """Mean over runs of the ``group_weights`` logged per epoch in ``history.jsonl`` (epochs x groups), or None."""
    frames = []
    for run in run_paths:
        if not (Path(run) / HISTORY).is_file():
            continue
        try:
            history = load_history(run)
        except GroupRobustError:  # a damaged history: the run's results stand, its weights stay out of the figure
            continue
        if "group_weights" not in history or "epoch" not in history:
            continue
        rows = {e: w for e, w in zip(history["epoch"], history["group_weights"]) if isinstance(w, list)}
        if rows:
            frames.append(pd.DataFrame.from_dict(rows, orient="index"))
    if not frames:
        return None
    return pd.concat(frames).groupby(level=0).mean().sort_index()


def group_weights_plot(weights: pd.DataFrame, title: str, group_names: list[str] | None, path: Path) -> Path:
    """Line plot of group weights (mean over seeds) against epoch."""
    if group_names and len(group_names) == weights.shape[1]:
        weights = weights.set_axis(group_names, axis=1)
    ax = weights.plot(figsize=(5, 3.4), legend=weights.shape[1] <= 12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("group weight (mean over seeds)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    tight_layout(ax.figure)
    save_figure_atomic(ax.figure, path, dpi=120)
    plt.close(ax.figure)
    return path


def plan_plots(report: "Report", out: Path) -> dict[str, tuple[Path, Callable[[], Path]]]:
    """Every figure the report supports, drawn into ``out``: ``{title: (path, draw)}``, where ``draw()``
    writes the figure and returns its path. Nothing is drawn or written yet (the report checks the paths
    first)."""
    plans: dict[str, tuple[Path, Callable[[], Path]]] = {}

    def add(title: str, path: Path, draw: Callable[..., Path], *args: Any) -> None:
        plans[title] = (path, partial(draw, *args, path))

    add("method comparison", out / "method_comparison.png", method_comparison, report.summary)
    for dataset in report.summary["dataset"].unique():
        if len(report.per_group) and (report.per_group["dataset"] == dataset).any():
            add(f"per-group accuracy, {dataset}", out / f"per_group_{_safe(dataset)}.png", per_group_heatmap,
                report.per_group, dataset)
    for (dataset, method), runs in report.chosen.groupby(["variant", "method"]):
        weights = group_weight_history(list(runs["path"]))
        if weights is not None:
            names = list(runs["test_per_group"].iloc[0] or {})
            add(f"group weights, {method} on {dataset}", out / f"group_weights_{_safe(dataset)}_{_safe(method)}.png",
                group_weights_plot, weights, f"{method} on {dataset}: group weights", names)
    return plans

