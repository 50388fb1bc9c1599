"""GroupDRO epoch time vs ERM epoch time through the same loop, model and data (target ratio <= 1.10).

Two GroupDRO variants: its defaults (group-balanced sampler, weight decay), and ``sampler=shuffle,
weight_decay=0`` so that only the objective (group losses + q update) differs from ERM.
Prints the median wall-clock and CPU seconds per epoch of each, the ratio of those medians to ERM's,
and the median of the paired ratios: each repeat times every variant back to back (in alternating
order, so no variant always runs first), and its ratio to the ERM epoch of the same repeat cancels
the machine's drift between repeats (on a shared CPU the paired ratio is the steadier one).
On the MLP (colored-digits, spurious-gaussian) and the CNN (colored-digits). Threads: the product's
policy (`grouprobust.threads`) unless ``--threads N`` fixes them (to compare two versions of the
library at equal threads, run this script with each on PYTHONPATH and the same ``--threads``).
Run: PYTHONPATH=src python benchmarks/groupdro_overhead.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.methods import TrainData, get_method
from grouprobust.models import pick_device
from grouprobust.training import Trainer, seed_everything

VARIANTS = {
    "erm": ("erm", {}),
    "groupdro (defaults)": ("groupdro", {}),
    "groupdro (shuffle, wd=0)": ("groupdro", {"sampler": "shuffle", "weight_decay": 0.0}),
}


CASES = (("colored-digits", {"conflict": 0.01}, "mlp"), ("spurious-gaussian", {"n": 20000}, "mlp"),
         ("colored-digits", {"conflict": 0.01}, "cnn"))


#: How repeats are summarised: ``median`` (default) or ``min`` (robust on a machine shared with other work).
STATISTIC = "median"


def epoch_seconds(dataset: str, data: dict, repeats: int, device: torch.device,
                  model: str = "mlp") -> dict[str, tuple[float, float, float]]:
    """Median (or min, see `STATISTIC`) (wall, process CPU) seconds of one training epoch per variant, and the
    median over repeats of its wall time over ERM's in the same repeat; repeats interleaved, the order of
    the variants reversed every other repeat."""
    splits = load_dataset(dataset, 0, **data)
    setups = {}
    for label, (method, hparams) in VARIANTS.items():
        trainer = Trainer(resolve_config(dataset, method, 0, data, {**hparams, "model": model}), splits, device)
        setups[label] = (trainer, TrainData(trainer.train_set, device))
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in VARIANTS}
    for r in range(repeats):
        for label, (trainer, train_data) in (list(setups.items()) if r % 2 == 0 else list(setups.items())[::-1]):
            seed_everything(r)
            model = trainer.new_model()
            method = trainer.new_method(get_method(VARIANTS[label][0]), train_data)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.run_epochs(method, model, 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[label].append((time.perf_counter() - start, time.process_time() - cpu_start))
    pick = min if STATISTIC == "min" else statistics.median
    erm = [w for w, _ in times["erm"]]
    return {label: (pick(w for w, _ in t), pick(c for _, c in t), statistics.median(w / e for (w, _), e in zip(t, erm)))
            for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="fix torch's threads (default: the policy)")
    parser.add_argument("--statistic", choices=("median", "min"), default="median")
    args = parser.parse_args()
    global STATISTIC
    STATISTIC = args.statistic
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    else:
        from grouprobust.threads import apply_thread_policy
        apply_thread_policy()
    device = pick_device()
    print(f"device: {device}, threads: {torch.get_num_threads()}, {args.statistic} of {args.repeats} repeats")
    print(f"{'dataset':<20}{'model':<6}{'variant':<28}{'wall s/epoch':>13}{'ratio':>8}{'CPU s/epoch':>13}{'ratio':>8}"
          f"{'paired':>8}")
    for dataset, data, model in CASES:
        seconds = epoch_seconds(dataset, data, args.repeats, device, model)
        wall0, cpu0, _ = seconds["erm"]
        for label, (wall, cpu, paired) in seconds.items():
            print(f"{dataset:<20}{model:<6}{label:<28}{wall:>13.4f}{wall / wall0:>8.3f}{cpu:>13.4f}{cpu / cpu0:>8.3f}"
                  f"{paired:>8.3f}")
    print("target: groupdro / erm <= 1.10 (paired: median over repeats of the wall-time ratio within a repeat)")


if __name__ == "__main__":
    main()
