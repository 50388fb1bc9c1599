"""Results tables for the generalized-reweighting family.

Main table: test worst-group / group-balanced / average accuracy (mean ± std over seeds) at the epoch
the dataset's validation rule selects. ``--study``: the GRW paper's claims on spurious-gaussian —
test worst-group accuracy at the *last* epoch (no early stopping) as weight decay grows, with the
cross-entropy and the polynomially-tailed loss.

Run directories go under ``--runs`` (finished ones are reused, so an interrupted table resumes).
Run: PYTHONPATH=src python benchmarks/grw_table.py [--seeds 0 1 2] [--datasets ...] [--study]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from grouprobust.config import resolve_config
from grouprobust.output import format_mean_std
from grouprobust.runs import run

#: (row label, method, hyper-parameter overrides, label regime)
ROWS = [
    ("erm", "erm", {}, "full"),
    ("iw", "iw", {}, "full"),
    ("resample", "resample", {}, "full"),
    ("groupdro", "groupdro", {}, "full"),
    ("cvar-dro", "cvar-dro", {}, "full"),
    ("chi2-dro", "chi2-dro", {}, "full"),
    ("jtt (val groups only)", "jtt", {}, "val"),
    ("erm + logit-adjusted", "erm", {"loss": "logit-adjusted"}, "full"),
    ("iw + poly-tailed", "iw", {"loss": "poly-tailed"}, "full"),
    ("groupdro + poly-tailed", "groupdro", {"loss": "poly-tailed"}, "full"),
]
STUDY_ROWS = [(f"{m}{' + ' + loss if loss != 'ce' else ''}, weight_decay={wd:g}", m, {"weight_decay": wd, "loss": loss}, "full")
              for m, loss in (("erm", "ce"), ("iw", "ce"), ("groupdro", "ce"), ("iw", "poly-tailed"))
              for wd in (0.0, 0.01, 0.1)]
DATASETS = {"spurious-gaussian": {}, "colored-digits": {"conflict": 0.01}}
METRICS = (("worst_group_acc", "WGA"), ("group_balanced_acc", "GBA"), ("avg_acc", "avg"))


def results(dataset: str, data: dict, row: tuple, seeds: list[int], runs: Path, device: str | None) -> list[dict]:
    """Result dicts of ``row`` for each seed (trained, or read back from ``runs``)."""
    label, method, hparams, regime = row
    out = []
    for seed in seeds:
        config = resolve_config(dataset, method, seed, data, hparams, regime)
        out.append(run(config, out=runs / dataset / f"{method}-{config.run_id}", device=device, save_model=False))
    return out


def mean_std(values: list[float]) -> str:
    """``mean ± std`` of fractions, in percent (sample std; "—" for one value)."""
    v = np.asarray(values)
    return format_mean_std(v.mean(), v.std(ddof=1) if len(v) > 1 else None, 1, 100)


def main_table(dataset: str, seeds: list[int], runs: Path, device: str | None) -> None:
    """Print the markdown table for ``dataset``, one row per method as it finishes."""
    print(f"| method | {' | '.join('test ' + name for _, name in METRICS)} | selected epochs | s/run |")
    print("|---|" + "---|" * (len(METRICS) + 2), flush=True)
    for row in ROWS:
        rs = results(dataset, DATASETS[dataset], row, seeds, runs, device)
        cells = [mean_std([r["metrics"]["test"][key] for r in rs]) for key, _ in METRICS]
        epochs = ",".join(str(r["selected"]["epoch"]) for r in rs)
        print(f"| {row[0]} | {' | '.join(cells)} | {epochs} | {np.mean([r['time_s'] for r in rs]):.0f} |", flush=True)


def study_table(seeds: list[int], runs: Path, device: str | None) -> None:
    """Print test WGA at the selected and at the last epoch on spurious-gaussian as weight decay grows."""
    print("| method | test WGA, selected epoch | test WGA, last epoch | train loss, last epoch |")
    print("|---|---|---|---|", flush=True)
    for row in STUDY_ROWS:
        rs = results("spurious-gaussian", {}, row, seeds, runs, device)
        selected = mean_std([r["metrics"]["test"]["worst_group_acc"] for r in rs])
        final = mean_std([r["final"]["metrics"]["test"]["worst_group_acc"] for r in rs])
        print(f"| {row[0]} | {selected} | {final} | {final_train_loss(runs, rs):.3f} |", flush=True)


def final_train_loss(runs: Path, rs: list[dict]) -> float:
    """Mean over seeds of the last epoch's training objective (from each run's ``history.jsonl``)."""
    import json

    losses = []
    for r in rs:
        history = (runs / "spurious-gaussian" / f"{r['method']}-{r['run_id']}" / "history.jsonl").read_text()
        losses.append(json.loads(history.strip().splitlines()[-1])["train_loss"])
    return float(np.mean(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--study", action="store_true", help="also the weight-decay / loss study on spurious-gaussian")
    parser.add_argument("--runs", type=Path, default=Path("runs/grw-table"))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    args = parser.parse_args()
    for dataset in args.datasets:
        options = ", ".join(f"{k}={v}" for k, v in DATASETS[dataset].items()) or "defaults"
        print(f"\n### {dataset} ({options}; seeds {' '.join(map(str, args.seeds))})\n", flush=True)
        main_table(dataset, args.seeds, args.runs, args.device)
    if args.study:
        print(f"\n### GRW study on spurious-gaussian (seeds {' '.join(map(str, args.seeds))})\n", flush=True)
        study_table(args.seeds, args.runs, args.device)


if __name__ == "__main__":
    main()
