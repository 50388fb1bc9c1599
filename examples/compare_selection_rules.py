"""Apply every model-selection rule to the same training histories and compare what each reports.

Trains one method on one dataset for several seeds (each history holds the validation and test
metrics of every epoch), then, per rule, takes the epoch the rule selects and prints the test
worst-group and average accuracy there (mean ± std over seeds). Oracle rules are marked.

Run: python examples/compare_selection_rules.py [dataset] [method] [seeds] [key=value ...]
(trailing key=value pairs are dataset options, as `--data` of `grouprobust train`)
"""

from __future__ import annotations

import sys

import numpy as np

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.output import format_mean_std
from grouprobust.selection import SELECTION_RULES, rule_key, select_best_index
from grouprobust.training import Trainer


def histories(dataset: str, method: str, seeds: int, data: dict[str, str]) -> list[list[dict]]:
    """One list of evaluated history entries per seed."""
    out = []
    for seed in range(seeds):
        config = resolve_config(dataset, method, seed, data)
        entries: list[dict] = []
        Trainer(config, load_dataset(dataset, seed, **config.data), log=entries.append).fit()
        out.append([e for e in entries if "metrics" in e])
    return out


def main() -> None:
    dataset = sys.argv[1] if len(sys.argv) > 1 else "spurious-gaussian"
    method = sys.argv[2] if len(sys.argv) > 2 else "erm"
    seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    data = dict(item.split("=", 1) for item in sys.argv[4:])  # dataset options, coerced by resolve_config
    runs = histories(dataset, method, seeds, data)
    options = " ".join(sys.argv[4:])
    print(f"{method} on {dataset} {options}, {seeds} seeds, {len(runs[0])} evaluated epochs each")
    print("| rule | epochs chosen | test worst-group acc % | test avg acc % | test train-weighted avg acc % |")
    print("| --- | --- | ---: | ---: | ---: |")
    for rule in SELECTION_RULES.values():
        best = [select_best_index([rule_key(entry, rule) for entry in run]) for run in runs]
        if any(b is None for b in best):  # a rule whose labels this dataset lacks
            print(f"| {rule.name} | n/a: no epoch has {rule.split} {rule.metric} | | | |")
            continue
        picks = [run[b] for run, b in zip(runs, best)]
        cols = []
        for key in ("worst_group_acc", "avg_acc", "train_weighted_avg_acc"):
            values = 100 * np.array([p["metrics"]["test"][key] for p in picks])
            cols.append(format_mean_std(values.mean(), values.std(ddof=1) if len(values) > 1 else None))
        name = rule.name + (" **[ORACLE]**" if rule.oracle else "")
        print(f"| {name} | {', '.join(str(p['epoch']) for p in picks)} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
