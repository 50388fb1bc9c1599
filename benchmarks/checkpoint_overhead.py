"""Per-epoch cost of checkpointing every epoch (`checkpoint_every=1`, the default) against no checkpoints.

The same run (`Trainer.fit`: training, evaluation each epoch, selection) is timed with a checkpoint file
and without one, alternately, REPEATS times each; prints the median seconds per epoch of each, their
ratio, the median time of one checkpoint write (measured inside the checkpointed runs) as a fraction
of the epoch, and the checkpoint's size. On a busy machine the ratio carries the noise of two whole
runs; the write's own share is the steadier figure.
Run: .venv/bin/python benchmarks/checkpoint_overhead.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from grouprobust import training
from grouprobust.checkpoint import remove_checkpoint
from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.training import Trainer

REPEATS = 3
CASES = (  # (label, dataset, method, data options, hyper-parameters)
    ("MLP, spurious-gaussian n=20000", "spurious-gaussian", "groupdro", {"n": 20000}, {"epochs": 3}),
    ("CNN, colored-digits", "colored-digits", "groupdro", {}, {"epochs": 2}),
)
WRITES: list[float] = []  # seconds of each checkpoint write


def timed_save(path, state) -> None:
    start = time.perf_counter()
    SAVE(path, state)
    WRITES.append(time.perf_counter() - start)


SAVE = training.save_checkpoint
training.save_checkpoint = timed_save


def seconds_per_epoch(trainer: Trainer, epochs: int) -> float:
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / epochs


def measure(dataset: str, method: str, data: dict, hparams: dict) -> tuple[float, float, float, int]:
    cfg = resolve_config(dataset, method, 0, data=data, hparams=hparams)
    splits = load_dataset(dataset, 0, **cfg.data)
    epochs = cfg.hparams["epochs"]
    WRITES.clear()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        plain, checkpointed, size = [], [], 0
        Trainer(cfg, splits, torch.device("cpu")).fit()  # warm-up: lazy imports and allocations, untimed
        for repeat in range(REPEATS):
            for with_file in (False, True) if repeat % 2 == 0 else (True, False):  # neither always goes first
                trainer = Trainer(cfg, splits, torch.device("cpu"), checkpoint=path if with_file else None)
                (checkpointed if with_file else plain).append(seconds_per_epoch(trainer, epochs))
            size = path.stat().st_size
            remove_checkpoint(path)  # else the next run would resume from it
    return statistics.median(plain), statistics.median(checkpointed), statistics.median(WRITES), size


def main() -> None:
    print(f"{'run':<32}{'none s/epoch':>13}{'every epoch':>12}{'ratio':>7}{'write s':>9}{'write/epoch':>12}"
          f"{'size':>9}")
    for label, dataset, method, data, hparams in CASES:
        plain, checkpointed, write, size = measure(dataset, method, data, hparams)
        print(f"{label:<32}{plain:>13.4f}{checkpointed:>12.4f}{checkpointed / plain:>7.3f}{write:>9.4f}"
              f"{write / plain:>12.4f}{size / 1e6:>6.2f} MB")


if __name__ == "__main__":
    main()
