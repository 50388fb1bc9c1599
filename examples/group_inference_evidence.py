"""Evidence for group inference and label-free last-layer retraining (docs/results.md).

For each dataset and seed: an ERM reference run (no group labels), groups inferred from it (EIIL and
JTT's error split), GroupDRO and resampling trained on the inferred groups (regime val: group labels
on validation only) against the same methods on the true groups (regime full) and ERM; then GSR,
DFR, AFR and SELF on one shared stage-1 run (identical features). Prints a markdown table of test
worst-group accuracy, mean ± std over seeds, and writes every run under OUT.

    python examples/group_inference_evidence.py OUT [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from grouprobust import load_trained_run, resolve_config, run
from grouprobust.group_inference import infer_groups
from grouprobust.output import format_mean_std, markdown_table

DATASETS = {
    "spurious-gaussian": ({}, {"epochs": 20}),
    "colored-digits[binary]": ({"variant": "binary", "conflict": 0.05, "copies": 5}, {"epochs": 5}),
    "toxic-templates": ({}, {"epochs": 10}),
}
INFERENCE = ("eiil", "errors")


def one_seed(label: str, data: dict, train: dict, seed: int, out: Path) -> dict[str, float]:
    dataset = label.split("[")[0]
    rows: dict[str, float] = {}

    def wga(result) -> float:
        return result["metrics"]["test"]["worst_group_acc"]

    erm = run(resolve_config(dataset, "erm", seed, data, train, "none"), out / "erm")
    rows["erm"] = wga(erm)
    reference = load_trained_run(out / "erm")
    for method in ("groupdro", "resample"):
        rows[f"{method} (true groups)"] = wga(run(resolve_config(dataset, method, seed, data, train, "full"),
                                                  out / f"{method}-true"))
        for name in INFERENCE:
            path = out / f"groups-{name}.npz"
            if not path.exists():
                infer_groups(name, reference, seed=seed).save(path)
            config = resolve_config(dataset, method, seed, data, {**train, "train_groups": str(path)}, "val")
            rows[f"{method} (inferred: {name})"] = wga(run(config, out / f"{method}-{name}"))
    stage1 = None
    for method in ("dfr", "gsr", "afr", "self"):
        hp = dict(train) if stage1 is None else {**train, "stage1": str(stage1)}
        rows[method] = wga(run(resolve_config(dataset, method, seed, data, hp), out / method))
        stage1 = stage1 or out / method / "stage1"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from: " + ", ".join(DATASETS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = {name: DATASETS[name] for name in args.datasets.split(",")}
    table: dict[str, dict[str, list[float]]] = {}
    for label, (data, train) in chosen.items():
        for seed in seeds:
            rows = one_seed(label, data, train, seed, args.out / label / f"seed{seed}")
            for name, value in rows.items():
                table.setdefault(name, {}).setdefault(label, []).append(value)
            print(label, seed, {k: round(v, 3) for k, v in rows.items()}, flush=True)
    columns = ["method", *chosen]
    body = [[name, *(format_mean_std(np.mean(v[c]), np.std(v[c], ddof=1) if len(v[c]) > 1 else None, 1, 100)
                     for c in chosen)] for name, v in table.items()]
    print(markdown_table(columns, body))


if __name__ == "__main__":
    main()
