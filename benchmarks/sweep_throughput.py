"""Sweep throughput: the same trials run serially in this process and on Ray with 2 workers.

Prints absolute times, the throughput ratio (serial time / Ray time; target >= 1.7 on 2 free
cores) and the per-trial overhead of Ray: (workers x Ray time - serial time) / trials, i.e. the
worker-seconds each trial costs on Ray beyond its serial cost, and the CPU seconds per trial in each
mode (which tell Ray's own cost apart from waiting for a core on a busy machine). The serial run is warm (imports and
one warm-up trial done before timing); so is the Ray run (one warm-up trial per worker first), with
``ray.init``, the workers' warm-up (imports) and shutdown timed separately.

    python benchmarks/sweep_throughput.py [--trials 16] [--epochs 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from grouprobust.sweep.executors import LocalExecutor, RayExecutor, run_trial
from grouprobust.sweep.runner import prepare
from grouprobust.sweep.trials import Trial


def sweep_file(folder: Path, trials: int, epochs: int) -> Path:
    """A sweep of ``trials`` ERM runs on spurious-gaussian (default sizes): 4 learning rates x seeds."""
    lrs = [0.0003, 0.001, 0.003, 0.01]
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump({"seeds": max(1, trials // len(lrs)), "set": {"epochs": epochs},
                                    "datasets": {"spurious-gaussian": {}},
                                    "methods": {"erm": {"grid": {"lr": lrs[:min(trials, len(lrs))]}}}}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = sweep_file(folder, args.trials, args.epochs)
        trials = prepare(path, folder / "serial")[1].to_run
        n = len(trials)
        load_before = os.getloadavg()[0]

        start = time.perf_counter()
        run_trial(replace(trials[0].config, seed=999).to_dict(), str(folder / "warmup"))
        t_serial_warm = time.perf_counter() - start
        start = time.perf_counter()
        serial = list(LocalExecutor().run(trials, folder / "serial" / "runs"))
        t_serial = time.perf_counter() - start
        assert all(o["status"] == "finished" for o in serial), serial

        start = time.perf_counter()
        executor = RayExecutor(args.workers)
        t_init = time.perf_counter() - start
        start = time.perf_counter()
        warmups = [Trial(replace(trials[0].config, seed=1000 + i), "warm-up") for i in range(args.workers)]
        list(executor.run(warmups, folder / "warmup"))
        t_warm = time.perf_counter() - start
        start = time.perf_counter()
        remote = list(executor.run(trials, folder / "ray" / "runs"))
        t_ray = time.perf_counter() - start
        start = time.perf_counter()
        executor.close()
        t_close = time.perf_counter() - start
        assert all(o["status"] == "finished" for o in remote), remote
        load_after = os.getloadavg()[0]

    in_worker = sum(o["time_s"] for o in remote)
    cpu_serial, cpu_ray = (sum(o["cpu_s"] for o in outs) / n for outs in (serial, remote))
    print(f"trials: {n} (spurious-gaussian, ERM, {args.epochs} epochs), cores: {os.cpu_count()}, "
          f"load average before/after: {load_before:.1f}/{load_after:.1f}")
    print(f"serial in-process: {t_serial:.1f} s ({t_serial / n:.2f} s/trial); its warm-up trial {t_serial_warm:.1f} s")
    print(f"ray, {args.workers} workers: init {t_init:.1f} s, worker warm-up {t_warm:.1f} s, trials {t_ray:.1f} s, "
          f"shutdown {t_close:.1f} s; "
          f"time inside run_trial {in_worker:.1f} s in all")
    print(f"throughput ratio (serial / ray trials): {t_serial / t_ray:.2f}  (target >= 1.7)")
    print(f"throughput ratio including ray init, warm-up and shutdown: "
          f"{t_serial / (t_init + t_warm + t_ray + t_close):.2f}")
    print(f"ray per-trial overhead: {(args.workers * t_ray - t_serial) / n:.2f} worker-s "
          f"(worker slot time not spent in serial-equivalent work); "
          f"{(args.workers * t_ray - in_worker) / n:.2f} s per trial outside run_trial")
    print(f"CPU time per trial inside run_trial: serial {cpu_serial:.2f} s, ray worker {cpu_ray:.2f} s "
          "(equal CPU with longer wall time means the workers were waiting for a core)")


if __name__ == "__main__":
    sys.exit(main())
