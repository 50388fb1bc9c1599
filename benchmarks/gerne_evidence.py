"""GERNE against ERM, group-balanced resampling and GroupDRO: the paper's direction on embedded data.

For each setting (colored-digits at conflict 0.005 and 0.01, scored by group-balanced accuracy;
spurious-gaussian, scored by worst-group accuracy), every method and every point of its small
grid is trained on 5 seeds. Each run picks its epoch by the setting's validation rule; each
method's grid point is the one with the best mean *validation* score over the seeds. The table
gives that point's test scores, mean ± std over the seeds. Runs are cached under ``--root`` (a
rerun skips finished runs).

    PYTHONPATH=src python benchmarks/gerne_evidence.py [--seeds 5] [--root runs/gerne-evidence] [--md out.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.output import format_mean_std
from grouprobust.runs import run

SETTINGS = [
    # (label, dataset, data options, selection rule = score)
    ("colored-digits conflict 0.005", "colored-digits", {"conflict": 0.005}, "val_group_balanced_acc"),
    ("colored-digits conflict 0.01", "colored-digits", {"conflict": 0.01}, "val_group_balanced_acc"),
    ("spurious-gaussian", "spurious-gaussian", {}, "val_worst_group_acc"),
]

# method name -> (regime, grid points: hyper-parameter overrides). GERNE's points cover c (beta + 1) = 0.75, 1
# (balanced in expectation), 1 (c = 1, beta = 0: resampling on each half) and 1.1 (past balanced; the largest
# beta that stays admissible at c = 1 on colored-digits, where beta_max is about 0.11).
METHODS: dict[str, tuple[str, list[dict]]] = {
    "erm": ("full", [{}]),
    "resample": ("full", [{}]),
    "groupdro": ("full", [{"weight_decay": 0.01}, {"weight_decay": 0.0001}]),
    "gerne": ("full", [{"c": 0.5, "beta": 0.5}, {"c": 0.5, "beta": 1.0}, {"c": 1.0, "beta": 0.0},
                       {"c": 1.0, "beta": 0.1}]),
    "gerne-pseudo": ("val", [{"c": 0.5, "beta": 1.0, "threshold": 0.9, "erm_epochs": 2}]),
}

METRIC = {"val_group_balanced_acc": "group_balanced_acc", "val_worst_group_acc": "worst_group_acc"}


def run_setting(dataset: str, data: dict, rule: str, seeds: list[int], root: Path, methods: list[str]) -> list[dict]:
    """One row per method: the validation-chosen grid point and its test scores over ``seeds``."""
    metric = METRIC[rule]
    rows = []
    for method in methods:
        regime, points = METHODS[method]
        best, tried = None, []
        for point in points:
            try:
                results = []
                for seed in seeds:
                    config = resolve_config(dataset, method, seed, data, dict(point), regime, rule)
                    results.append(run(config, out=root / dataset / method / config.run_id, save_model=False))
            except GroupRobustError as err:  # e.g. a beta outside this data's admissible range
                print(f"skipped {method} {point} on {dataset}: {err}", flush=True)
                continue
            val = np.mean([r["metrics"]["val"][metric] for r in results])
            tried.append((point, val, np.mean([r["metrics"]["test"][metric] for r in results])))
            if best is None or val > best["val"]:
                best = {"method": method, "point": point, "val": val, "results": results}
        test = np.array([[r["metrics"]["test"][m] for m in ("group_balanced_acc", "worst_group_acc", "avg_acc")]
                         for r in best["results"]])
        best.update(tried=tried, test_mean=test.mean(axis=0), test_std=test.std(axis=0, ddof=1) if len(seeds) > 1 else [None] * test.shape[1])
        rows.append(best)
    return rows


def table(label: str, rule: str, rows: list[dict], n_seeds: int) -> str:
    """A markdown table of one setting (accuracies in %)."""
    out = [f"**{label}** (selection: `{rule}`, {n_seeds} seeds, mean ± std, %)", "",
           "| method | chosen on val | val score | test group-balanced | test worst-group | test average |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        point = ", ".join(f"{k}={v}" for k, v in r["point"].items()) or "defaults"
        cells = [format_mean_std(m, s, 1, 100) for m, s in zip(r["test_mean"], r["test_std"])]
        out.append(f"| {r['method']} | {point} | {100 * r['val']:.1f} | " + " | ".join(cells) + " |")
    out.append("")
    for r in rows:
        if len(r["tried"]) > 1:
            grid = "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) + f": val {100 * v:.1f} / test {100 * t:.1f}"
                             for p, v, t in r["tried"])
            out.append(f"- {r['method']} grid (mean over seeds, val / test score): {grid}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("runs/gerne-evidence"))
    parser.add_argument("--md", type=Path, default=None, help="also write the tables to this markdown file")
    parser.add_argument("--only", default=None, help="run only settings whose label contains this text")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the methods")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    parts = []
    for label, dataset, data, rule in SETTINGS:
        if args.only and args.only not in label:
            continue
        start = time.perf_counter()
        rows = run_setting(dataset, data, rule, seeds, args.root, args.methods.split(","))
        text = table(label, rule, rows, len(seeds))
        parts.append(text)
        print(text, f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.md:
        args.md.write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
