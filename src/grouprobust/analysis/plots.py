"""Matplotlib figures (Agg backend) for the analyses; each returns a figure for `AnalysisDirectory.figure`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grouprobust.analysis.output_dir import new_figure
from grouprobust.output import tight_layout


def _errorbar(ax: Any, x: np.ndarray, summary: pd.DataFrame, col: str, **kw: Any) -> None:
    ax.errorbar(x, summary[f"{col}_mean"], yerr=summary[f"{col}_std"], capsize=3, marker="o", ms=4, **kw)


def _l2_axis(ax: Any, l2: np.ndarray) -> None:
    positive = l2[l2 > 0]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    ax.set_xlabel("L2 strength (weight_decay)")
    ax.grid(alpha=0.3)


def plot_alignment(summary: pd.DataFrame) -> Any:
    """Three panels over L2: worst-group loss gap and its bound; test worst-group accuracy; cosines."""
    fig, (ax_gap, ax_acc, ax_cos) = new_figure(3)
    l2 = summary["l2"].to_numpy()
    for i, (method, part) in enumerate(summary.groupby("method", sort=False)):
        x, color = part["l2"].to_numpy(), f"C{i}"
        if method != "erm" and "loss_gap_mean" in part and part["loss_gap_mean"].notna().any():
            _errorbar(ax_gap, x, part, "loss_gap", color=color, label=f"gap ERM − {method}")
            _errorbar(ax_gap, x, part, "bound", color=color, ls="--", label=f"bound ({method})")
        _errorbar(ax_acc, x, part, "test_worst_group_acc", color=color, label=method)
        _errorbar(ax_cos, x, part, "cos_spurious", color=color, label=f"{method} · spurious (solid)")
        _errorbar(ax_cos, x, part, "cos_oracle", color=color, ls="--", label=f"{method} · oracle (dashed)")
    ax_gap.set_ylabel("worst-group regularised train loss (nats)")
    ax_gap.set_title("gap and strong-convexity bound")
    ax_acc.set_ylabel("test worst-group accuracy")
    ax_acc.set_title("worst-group accuracy")
    ax_cos.set_ylabel("cosine with reference head")
    ax_cos.set_title("alignment")
    for ax in (ax_gap, ax_acc, ax_cos):
        _l2_axis(ax, l2)
        ax.legend(fontsize=7)
    tight_layout(fig)
    return fig


def plot_completeness(summary: pd.DataFrame) -> Any:
    """Grouped bars (mean ± std over seeds) of the DCI scores per method."""
    fig, (ax,) = new_figure(1, width=6.5)
    scores = ["completeness_label", "completeness_attribute", "disentanglement", "informativeness_label",
              "informativeness_attribute"]
    labels = ["C label", "C attribute", "D", "I label", "I attribute"]
    methods = list(summary["method"])
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(scores))
    for i, method in enumerate(methods):
        row = summary.iloc[i]
        ax.bar(x + i * width, [row[f"{s}_mean"] for s in scores], width, yerr=[row[f"{s}_std"] for s in scores],
               capsize=3, label=method)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (C, D in [0, 1]; I = held-out accuracy)")
    ax.set_title("DCI of end-to-end representations")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    tight_layout(fig)
    return fig


#: Distances below this are drawn at it (exact zeros cannot sit on a log axis).
FLOOR = 1e-8


def plot_implicit_bias(curves: pd.DataFrame) -> Any:
    """One panel per loss: relative distance to ERM over GD steps (mean over seeds, band = min..max; log axes)."""
    losses = list(dict.fromkeys(curves["loss"]))
    fig, axes = new_figure(len(losses))
    colors = {lam: f"C{i}" for i, lam in enumerate(sorted(curves["l2"].unique()))}
    styles = {"iw": "-", "groupdro": "--"}
    for ax, loss in zip(axes, losses):
        part = curves[curves["loss"] == loss]
        for (lam, method), sub in part.groupby(["l2", "method"]):
            stats = sub.groupby("step")["rel_dist"].agg(["mean", "min", "max"]).clip(lower=FLOOR)
            ax.plot(stats.index, stats["mean"], styles.get(method, ":"), color=colors[lam],
                    label=f"{method}, L2={lam:g}")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colors[lam], alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step")
        ax.set_ylabel("||W − W_erm|| / ||W_erm||")
        ax.set_title(f"loss: {loss}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    tight_layout(fig)
    return fig
