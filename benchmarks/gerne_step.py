"""GERNE's step time against ERM's at the same total batch size, through the one training loop.

GERNE's step draws two half-batches (biased and less-biased) from two group-weighted
distributions and runs one forward and one backward pass over their concatenation; ERM's step
runs one shuffled batch of the same total size. Target: ratio <= 1.25.

    PYTHONPATH=src python benchmarks/gerne_step.py [--batch-size 128] [--epochs 2] [--repeats 3]

Prints the absolute time per step of each (median over repeats) and the ratio, from one run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.methods.base import TrainData
from grouprobust.methods.registry import get_method
from grouprobust.models import pick_device
from grouprobust.training import Trainer, seed_everything


def seconds_per_step(method_name: str, splits, device: torch.device, batch_size: int, epochs: int, repeats: int) -> float:
    """Median over ``repeats`` of (wall time of ``epochs`` loop epochs) / steps, in seconds."""
    config = resolve_config("colored-digits", method_name, seed=0, data={"conflict": 0.01},
                            hparams={"batch_size": batch_size, "epochs": epochs})
    trainer = Trainer(config, splits, device)
    data = TrainData(trainer.train_set, device)
    method = trainer.new_method(get_method(method_name), data)
    method.setup(trainer)
    steps = epochs * math.ceil(data.n / batch_size)
    seed_everything(0)
    trainer.run_epochs(method, trainer.new_model(), 1)  # warm-up
    times = []
    for _ in range(repeats):
        model = trainer.new_model()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.run_epochs(method, model, epochs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="total examples per step for both methods")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    splits = load_dataset("colored-digits", 0, conflict=0.01)
    erm = seconds_per_step("erm", splits, device, args.batch_size, args.epochs, args.repeats)
    gerne = seconds_per_step("gerne", splits, device, args.batch_size, args.epochs, args.repeats)
    print(f"device {device}, colored-digits (n={len(splits.train)}), cnn, total batch size {args.batch_size}")
    print(f"ERM   step: {1e3 * erm:.3f} ms")
    print(f"GERNE step: {1e3 * gerne:.3f} ms  ({args.batch_size // 2} biased + {args.batch_size // 2} less-biased)")
    print(f"ratio GERNE / ERM: {gerne / erm:.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
