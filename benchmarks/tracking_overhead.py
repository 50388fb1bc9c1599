"""Experiment tracking's cost: one run untracked, with TensorBoard and with MLflow (local file store).

Usage: PYTHONPATH=src python benchmarks/tracking_overhead.py [--epochs 10] [--repeats 3]

GroupDRO on spurious-gaussian, written to a run directory each time (a fresh one per repeat). Prints
the median wall-clock seconds of each setting and its ratio to the untracked run measured in the
same process. A tracker whose library is not installed is reported as skipped. The first
tracked run of each kind pays its library's import; it is timed apart and left out of the median.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grouprobust.config import resolve_config
from grouprobust.runs import run
from grouprobust.tracking import make_tracker


def timed_run(config, out: Path, track: str | None) -> float:
    start = time.perf_counter()
    run(config, out, tracker=make_tracker(track, out.parent) if track else None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = resolve_config("spurious-gaussian", "groupdro", 0, {"n": 1000, "n_val": 500, "n_test": 500},
                            {"epochs": str(args.epochs)})
    settings = [None] + [t for t, module in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"))
                         if importlib.util.find_spec(module)]
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str | None, list[float]] = {s: [] for s in settings}
        first: dict[str | None, float] = {}
        for setting in settings:
            first[setting] = timed_run(config, Path(tmp) / f"{setting}-warm" / "run", setting)
        for i in range(args.repeats):
            for setting in settings:
                times[setting].append(timed_run(config, Path(tmp) / f"{setting}-{i}" / "run", setting))
    base = statistics.median(times[None])
    print(f"groupdro, {args.epochs} epochs, median of {args.repeats} (first run, with imports, in brackets)")
    for setting in settings:
        med = statistics.median(times[setting])
        print(f"  {setting or 'untracked':12s} {med:7.3f} s  ratio {med / base:5.2f}  [{first[setting]:.3f} s]")
    for missing in {"tensorboard", "mlflow"} - set(settings):
        print(f"  {missing:12s} skipped (not installed)")


if __name__ == "__main__":
    main()
