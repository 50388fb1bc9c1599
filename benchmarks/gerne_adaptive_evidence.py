"""Fixed against adaptive beta in GERNE, with resampling, from the sweeps of examples/sweep-gerne-adaptive-*.yaml.

Run the sweeps first (one per conflict level), then this script on their output directories:

    grouprobust sweep examples/sweep-gerne-adaptive-0.005.yaml --out runs/gerne-adaptive-0.005
    grouprobust sweep examples/sweep-gerne-adaptive-0.01.yaml --out runs/gerne-adaptive-0.01
    PYTHONPATH=src python benchmarks/gerne_adaptive_evidence.py runs/gerne-adaptive-0.005 runs/gerne-adaptive-0.01

GERNE's runs are split by ``beta_schedule`` into two methods, ``gerne[fixed]`` and ``gerne[adaptive]``;
each method's point is chosen by the sweep report's rule (the best mean validation score over the
seeds, `grouprobust.sweep.report.select_and_aggregate`), and its test scores are given as mean ± std
over the seeds (%). Below each table: every point's mean validation / test score, the per-seed
test difference adaptive − fixed at the chosen points, and the mean beta the adaptive runs used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from grouprobust.sweep.collect import collect_runs
from grouprobust.sweep.report import select_and_aggregate


def split_schedules(runs):
    """The runs with GERNE's method name suffixed by its beta schedule."""
    runs = runs.copy()
    for i, row in runs.iterrows():
        if row["method"] == "gerne":
            runs.at[i, "method"] = f"gerne[{json.loads(row['hparams']).get('beta_schedule', 'fixed')}]"
    return runs


def mean_adaptive_beta(path: str) -> float:
    """The mean over epochs of the epoch-mean beta one adaptive run used."""
    lines = [json.loads(line) for line in (Path(path) / "history.jsonl").read_text().splitlines()]
    return float(np.mean([entry["gerne"]["beta_epoch_mean"] for entry in lines]))


def report(directory: Path) -> str:
    """The markdown section for one sweep directory."""
    runs = collect_runs(directory)
    # only the trials of the sweep file as it stands (a directory may also hold runs of an earlier grid)
    sweep = json.loads((Path(directory) / "sweep.json").read_text())
    listed = {t["run_id"] for t in sweep["trials"]}
    runs = split_schedules(runs[runs["run_id"].isin(listed)].reset_index(drop=True))
    rep = select_and_aggregate(runs)
    metric = rep.summary["rule"].iloc[0].removeprefix("val_")
    given = next(iter(sweep["spec"]["datasets"].values())) or {}  # the options the sweep file sets
    data = ", ".join(f"{k} {v}" for k, v in given.items())
    out = [f"**{rep.summary['dataset'].iloc[0]}, {data}** (`{directory}`; selection `val_{metric}`, "
           f"{int(rep.summary['n_seeds'].max())} seeds, mean ± std, %)", "",
           f"| method | chosen on val | val {metric} | test group-balanced | test worst-group | test average |",
           "|---|---|---|---|---|---|"]
    for _, r in rep.summary.iterrows():
        cells = [f"{100 * r[f'test_{m}_mean']:.1f} ± {100 * r[f'test_{m}_std']:.1f}"
                 for m in ("group_balanced_acc", "worst_group_acc", "avg_acc")]
        out.append(f"| {r['method']} | {r['hparams']} | {100 * r[f'val_{metric}_mean']:.1f} | " + " | ".join(cells) + " |")
    out.append("")
    finished = runs[runs["status"] == "finished"]
    for method, group in finished.groupby("method"):
        if not method.startswith("gerne"):
            continue
        points = []
        for hp, pts in group.groupby("hparams"):
            beta = json.loads(hp)["beta"]
            extra = ""
            if method == "gerne[adaptive]":
                extra = f", mean beta used {np.mean([mean_adaptive_beta(p) for p in pts['path']]):.2f}"
            points.append(f"beta={beta}: val {100 * pts[f'val_{metric}'].mean():.1f} / "
                          f"test {100 * pts[f'test_{metric}'].mean():.1f}{extra}")
        out.append(f"- {method} points (mean over seeds, val / test {metric}): " + "; ".join(points))
    chosen = rep.chosen
    fixed = chosen[chosen["method"] == "gerne[fixed]"].set_index("seed")[f"test_{metric}"]
    adaptive = chosen[chosen["method"] == "gerne[adaptive]"].set_index("seed")[f"test_{metric}"]
    diff = (adaptive - fixed).dropna()
    if len(diff):
        out.append(f"- adaptive − fixed test {metric} per seed (chosen points): "
                   + ", ".join(f"{100 * d:+.1f}" for d in diff) + f"; adaptive ahead on {int((diff > 0).sum())} of {len(diff)}")
    if not rep.failures.empty:
        out.append(f"- {len(rep.failures)} failed runs: " + "; ".join(rep.failures["reason"].astype(str).unique()))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+", help="sweep output directories")
    parser.add_argument("--md", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    text = "\n\n".join(report(d) for d in args.directories)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")


if __name__ == "__main__":
    main()
