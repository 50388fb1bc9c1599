"""Running trials: `run_trial` (one trial, the single place a trial is executed) and two executors.

`LocalExecutor` runs trials one after another in this process. `RayExecutor` hands them to Ray
(a local instance with the requested number of workers, or an existing cluster): Ray does the
scheduling; this module only submits tasks and yields their outcomes as they complete.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from grouprobust.config import RunConfig
from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.rundir import RunDirectory
from grouprobust.runs import run
from grouprobust.sweep.trials import Trial
from grouprobust.threads import apply_thread_policy

Outcome = dict[str, Any]
EXECUTORS = ("local", "ray")


def run_trial(config: dict[str, Any], runs: str, threads: int | None = None) -> Outcome:
    """Run one trial into ``runs/<run_id>``; returns ``{"run_id", "status", "reason", "time_s", "cpu_s"}``.

    ``status`` is ``finished`` or ``failed``; a failure of any kind (a diverging loss, a bad
    combination only found while training, a bug) is written as a failed run directory with its
    reason instead of stopping the sweep. ``time_s`` is wall-clock and ``cpu_s`` this process's CPU
    time, in seconds. ``threads`` sets torch's intra-op thread count (None: the policy of
    `grouprobust.threads`, applied by `grouprobust.runs.run`). Every trial, loop or
    two-stage, runs through `grouprobust.runs.run`.
    """

    apply_thread_policy(threads)
    cfg = RunConfig.from_dict(config)
    out = Path(runs) / cfg.run_id
    start, cpu = time.perf_counter(), time.process_time()
    try:
        run(cfg, out)
        return {"run_id": cfg.run_id, "status": "finished", "reason": None, "time_s": time.perf_counter() - start,
                "cpu_s": time.process_time() - cpu}
    except DivergedError as err:  # `run` has already written error.json
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - recorded as a failed trial; the sweep goes on
        reason = str(err) if isinstance(err, GroupRobustError) else f"{type(err).__name__}: {err}"
        writer = RunDirectory(out, cfg.to_dict())
        writer.open()
        writer.fail(reason, {"error_type": type(err).__name__,
                             "traceback": None if isinstance(err, GroupRobustError) else traceback.format_exc()})
    return {"run_id": cfg.run_id, "status": "failed", "reason": reason, "time_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu}


class LocalExecutor:
    """Runs trials serially in this process; ``threads`` None: each trial's count from the thread policy."""

    slots = 1

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, trials: list[Trial], runs: Path) -> Iterator[Outcome]:
        """Yield each trial's outcome as it finishes, in order."""
        for trial in trials:
            yield run_trial(trial.config.to_dict(), str(runs), self.threads)

    def close(self) -> None:
        """Nothing to release."""


class RayExecutor:
    """Runs trials as Ray tasks (``threads`` CPUs and torch threads each, default 1) on a local instance or a
    cluster: Ray reserves the task's CPUs, so the task's share of its node is exactly that many.

    With ``address`` None a local instance with ``workers`` CPUs is started (and shut down by
    `close`); otherwise the cluster at ``address`` is joined, and every node must see the output
    directory (a shared file system). ``gpus_per_trial`` None gives each trial an equal share of
    the cluster's GPUs (none if it has none).
    """

    def __init__(self, workers: int = 2, address: str | None = None, gpus_per_trial: float | None = None,
                 threads: int | None = None):
        try:
            import ray
        except ImportError:
            raise GroupRobustError("the Ray executor needs Ray; install it with `pip install grouprobust[ray]` "
                                   "or use the local executor", subject="executor") from None
        if address is not None:
            _check_reachable(address)
        self.ray = ray
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                 "configure_logging": True}
        try:
            if address is None:
                ray.init(num_cpus=workers, **quiet)
            else:
                ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        except (ConnectionError, RuntimeError, ValueError) as err:
            target = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise GroupRobustError(f"could not start or join {target} ({str(err).splitlines()[0]}); "
                                   "check the address or use the local executor", subject="address") from None
        resources = ray.cluster_resources()
        self.slots = max(1, int(resources.get("CPU", workers)))
        gpus = float(resources.get("GPU", 0.0))
        if gpus_per_trial is None:
            gpus_per_trial = min(1.0, gpus / self.slots) if gpus else 0.0
        self.threads = threads or 1
        self.task = ray.remote(num_cpus=self.threads, num_gpus=gpus_per_trial, max_retries=0)(run_trial)

    def run(self, trials: list[Trial], runs: Path) -> Iterator[Outcome]:
        """Submit every trial and yield outcomes in completion order."""
        ray = self.ray
        runs_text = str(Path(runs).resolve())
        pending = [self.task.remote(t.config.to_dict(), runs_text, self.threads) for t in trials]
        by_ref = dict(zip(pending, trials))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker itself died (e.g. out of memory)
                    trial = by_ref[ref]
                    yield {"run_id": trial.run_id, "status": "lost", "reason": str(err).splitlines()[0], "time_s": 0.0,
                           "cpu_s": 0.0}

    def close(self) -> None:
        """Shut down the Ray connection (and the local instance, if this executor started one)."""
        self.ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast if nothing accepts connections at ``host:port`` (Ray itself would retry for minutes)."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise GroupRobustError(f"no Ray cluster answers at {address} ({err.strerror or err}); "
                               "check the address (host:port of the head node) or leave it out for a local instance",
                               subject="address") from None


def check_executor(name: str, workers: int = 1, address: str | None = None) -> None:
    """Raise a one-line error for an unknown executor or a bad combination of its options."""
    if name not in EXECUTORS:
        raise GroupRobustError(f"unknown executor {name!r}; use local or ray", subject="executor")
    if workers < 1:
        raise GroupRobustError(f"workers must be >= 1, got {workers}", subject="workers")
    if name == "local":
        if workers > 1 or address:
            raise GroupRobustError("the local executor runs one trial at a time in this process; "
                                   "use executor ray for workers > 1 or an address", subject="executor")


def make_executor(name: str, workers: int = 1, address: str | None = None,
                  threads: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``), checked by `check_executor`; ``threads``: torch
    threads per trial (None: the thread policy locally, one per Ray task)."""
    check_executor(name, workers, address)
    return LocalExecutor(threads) if name == "local" else RayExecutor(workers, address, threads=threads)
