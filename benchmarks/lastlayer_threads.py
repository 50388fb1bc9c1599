"""A last-layer fit called from Python: the native thread policy against numpy's default pools and one
thread, quiet and beside a busy process, in one run.

The fit is GSR at the Waterbirds shape of `gsr_scale.py` (479 x 2048 held out, 100 outer steps),
timed inside a fresh process each time (the data are generated first; only ``fit`` is timed):

* ``policy``: ``GSR().fit`` as a user calls it (the estimator applies
  `grouprobust.threads.native_thread_policy` for the duration of ``fit``);
* ``numpy default``: the same with ``OPENBLAS_NUM_THREADS`` set to the machine's core count, the
  pools numpy starts with (a user setting, so the policy stands aside): an estimator without the
  policy;
* ``one thread``: ``OPENBLAS_NUM_THREADS=1``;

each (a) on the machine as it is ("quiet") and (b) beside busy processes that keep all cores but one
spinning. Prints the median of ``--repeats`` interleaved runs, the ratios and the load average.

    PYTHONPATH=src python benchmarks/lastlayer_threads.py [--repeats 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIT = """
import sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from gsr_scale import SHAPES, directions, synthetic
from grouprobust.lastlayer import GSR
n, d, n_target, k, _, _, _ = SHAPES["waterbirds"]
rng = np.random.default_rng(0)
dirs = directions(d, rng)
X, y, _ = synthetic(n, dirs, 0.95, rng)
Xt, yt, gt = synthetic(n_target, dirs, 0.5, rng)
start = time.perf_counter()
GSR(n_steps={steps}).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)
print(time.perf_counter() - start)
"""

ARMS = ("policy", "numpy default", "one thread")
NATIVE_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def spin() -> None:
    """Keep one core busy until terminated."""
    while True:
        pass


def one_fit(arm: str, steps: int) -> float:
    """Seconds of one ``GSR.fit`` in a fresh process under ``arm``'s thread setting."""
    env = {k: v for k, v in os.environ.items() if k not in NATIVE_ENV}
    if arm == "numpy default":
        env["OPENBLAS_NUM_THREADS"] = str(os.cpu_count() or 1)
    elif arm == "one thread":
        env["OPENBLAS_NUM_THREADS"] = "1"
    code = FIT.format(bench=str(Path(__file__).resolve().parent), steps=steps)
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per arm over ``repeats`` interleaved runs."""
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm in ARMS:
            times[arm].append(one_fit(arm, steps))
    return {arm: statistics.median(values) for arm, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    results = {}
    for condition in ("quiet", "busy"):
        spinners = []
        if condition == "busy":
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(max(1, cores - 1))]
            for p in spinners:
                p.start()
            time.sleep(1.0)
        load = os.getloadavg()[0]
        try:
            results[condition] = measure(args.repeats, args.steps)
        finally:
            for p in spinners:
                p.terminate()
        row = results[condition]
        print(f"{condition:5s} (load {load:.1f}): " + ", ".join(f"{arm} {row[arm]:.2f} s" for arm in ARMS)
              + f"; policy / numpy default {row['policy'] / row['numpy default']:.3f}, "
              f"policy / one thread {row['policy'] / row['one thread']:.3f}", flush=True)


if __name__ == "__main__":
    main()
