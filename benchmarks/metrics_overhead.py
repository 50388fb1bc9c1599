"""What the full metrics dict adds to each evaluation of the training loop.

Per dataset (default options and architecture, ERM): the fastest of 7 timings (the machine is shared;
the minimum is the least disturbed by other processes) of one training epoch
(`Trainer.run_epochs`), of the forward pass over the test split, of accuracy-only metrics (the
argmax), and of the full `dataset_metrics` (from the softmax). The loop evaluates val and test every
epoch, so the figure that matters is the added time per epoch, (full - accuracy-only) x 2 splits
(test size used for both), as a fraction of a training epoch. Target: <= 0.10.
Run: .venv/bin/python benchmarks/metrics_overhead.py
"""

from __future__ import annotations

import time

import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.methods.base import TrainData
from grouprobust.methods.erm import ERM
from grouprobust.metrics import dataset_metrics, group_accuracy_metrics
from grouprobust.models import predict_logits
from grouprobust.training import Trainer

REPEATS = 7


def best_time(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    device = torch.device("cpu")
    print(f"{'dataset':<20}{'test n':>7}{'groups':>7}{'epoch ms':>10}{'fwd ms':>8}{'acc ms':>8}{'full ms':>9}"
          f"{'added/epoch':>13}")
    for dataset in ("colored-digits", "spurious-gaussian"):
        config = resolve_config(dataset, "erm", 0)
        splits = load_dataset(dataset, 0, **config.data)
        test, counts = splits.test, splits.train.group_counts()
        trainer = Trainer(config, splits, device)
        model = trainer.new_model()
        method = trainer.new_method(ERM, TrainData(trainer.train_set, device))
        epoch = best_time(lambda: trainer.run_epochs(method, model, 1))
        probs = torch.softmax(predict_logits(model, test.x, device).double(), dim=1).numpy()
        pred = probs.argmax(1)
        forward = best_time(lambda: predict_logits(model, test.x, device))
        acc_only = best_time(lambda: group_accuracy_metrics(test.y, pred, test.g, test.n_groups, test.n_classes))
        full = best_time(lambda: dataset_metrics(test, probs, counts))
        added = 2 * (full - acc_only) / epoch
        print(f"{dataset:<20}{len(test):>7}{test.n_groups:>7}{1e3 * epoch:>10.1f}{1e3 * forward:>8.1f}"
              f"{1e3 * acc_only:>8.1f}{1e3 * full:>9.1f}{added:>13.3f}")
    print("added/epoch = 2 x (full - accuracy-only) / training epoch; target <= 0.10")


if __name__ == "__main__":
    main()
