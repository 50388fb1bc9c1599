"""The thread policy against torch's default and one thread, quiet and beside busy processes, in one run.

The same short run (``grouprobust train --dataset colored-digits --method erm --epochs 3``, in a
fresh process each time, timed from process start to exit) under three thread settings:

* ``policy``: the product as a user runs it (the CLI: passive OpenMP waiting, the thread policy);
* ``torch default``: the same training with the policy switched off (torch's own count, the
  OpenMP runtime's default waiting), i.e. torch as it comes;
* ``one thread``: the CLI with ``OMP_NUM_THREADS=1``;

each (a) on the machine as it is ("quiet") and (b) beside busy processes that keep all cores
but one spinning. Targets: policy under contention <= 1.15 x one thread under contention;
policy when quiet <= 1.05 x torch default when quiet. Prints the median of ``--repeats`` runs
(interleaved, the order reversed every other repeat), every run's time, the ratios (the median over
repeats of the ratio within a repeat: the machine's drift between repeats cancels) and the load
average, so a machine shared with other work shows.

    PYTHONPATH=src python benchmarks/thread_contention.py [--repeats 5] [--epochs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The "torch default" arm: the same work as `grouprobust train` through the library, with the
# policy's entry point replaced by a no-op before anything applies it.
TORCH_DEFAULT = """
import sys
import grouprobust.threads as t
t.apply_thread_policy = lambda threads=None, workers=1: t.current_choice()
import grouprobust.runs
grouprobust.runs.apply_thread_policy = t.apply_thread_policy
from grouprobust.cli import main
main(sys.argv[1:])
"""


def spin() -> None:
    """Keep one core busy until terminated."""
    while True:
        pass


def one_run(arm: str, epochs: int, out: Path) -> float:
    """Wall-clock seconds of one training process for ``arm`` (start to exit)."""
    args = ["train", "--dataset", "colored-digits", "--method", "erm", "--epochs", str(epochs), "--quiet",
            "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    if arm == "one thread":
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-c", TORCH_DEFAULT, *args] if arm == "torch default" else \
        [sys.executable, "-m", "grouprobust", *args]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(arms: list[str], repeats: int, epochs: int, root: Path, tag: str) -> dict[str, list[float]]:
    """Seconds of each arm's ``repeats`` runs, interleaved (the arms' order reversed every other repeat, so
    that no arm always follows the same one)."""
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            times[arm].append(one_run(arm, epochs, root / f"{tag}-{arm.replace(' ', '-')}-{r}"))
    return times


def paired(times: dict[str, list[float]], arm: str, reference: str) -> float:
    """Median over repeats of ``arm``'s time over ``reference``'s in the same repeat (cancels the drift between repeats)."""
    return statistics.median(a / b for a, b in zip(times[arm], times[reference]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    arms = ["policy", "torch default", "one thread"]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"cores: {cores}, load average at start: {os.getloadavg()[0]:.2f}")
        quiet = measure(arms, args.repeats, args.epochs, Path(tmp), "quiet")
        load_quiet = os.getloadavg()[0]
        busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(max(1, cores - 1))]
        for p in busy:
            p.start()
        try:
            time.sleep(1.0)
            contended = measure(arms, args.repeats, args.epochs, Path(tmp), "busy")
            load_busy = os.getloadavg()[0]
        finally:
            for p in busy:
                p.terminate()
    print(f"{'condition':<28}{'policy s':>10}{'torch default s':>17}{'one thread s':>14}{'policy/torch':>14}"
          f"{'policy/one':>12}{'load':>7}   (medians of {args.repeats}; ratios: median of paired ratios)")
    for name, runs, load in (("quiet", quiet, load_quiet), (f"beside {len(busy)} busy process(es)", contended, load_busy)):
        t = {arm: statistics.median(v) for arm, v in runs.items()}
        print(f"{name:<28}{t['policy']:>10.2f}{t['torch default']:>17.2f}{t['one thread']:>14.2f}"
              f"{paired(runs, 'policy', 'torch default'):>14.3f}{paired(runs, 'policy', 'one thread'):>12.3f}{load:>7.2f}")
        print(f"{'  every run (s)':<28}" + "; ".join(f"{arm} " + " ".join(f"{x:.2f}" for x in v) for arm, v in runs.items()))
    print("targets: contended policy/one <= 1.15; quiet policy/torch <= 1.05")


if __name__ == "__main__":
    main()
