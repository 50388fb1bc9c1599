"""Running trials: `run_trial` (one trial, the single place a trial is executed) and two executors.

`LocalExecutor` runs trials one after another in this process, or, on a machine with several GPUs,
one per GPU (or per share of one) at a time in worker processes, each pinned to its GPU with
``CUDA_VISIBLE_DEVICES``. `RayExecutor` hands them to Ray (a local instance with the requested number
of workers, or an existing cluster) with the CPUs and GPUs each trial asks for: Ray does the
scheduling; this module only submits tasks and yields their outcomes as they complete.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator

from grouprobust.config import RunConfig
from grouprobust.errors import DivergedError, GroupRobustError, RunInterrupted
from grouprobust.outdir import DiskError
from grouprobust.output import read_json
from grouprobust.rundir import RunBusyError, RunDirectory, directory_token, run_status
from grouprobust.runs import run
from grouprobust.tracking import make_tracker
from grouprobust.sweep import placement
from grouprobust.sweep.placement import Slot, check_cpus_per_trial, check_gpus_per_trial, cluster_slots, local_slots
from grouprobust.sweep.trials import Trial
from grouprobust.threads import apply_thread_policy, usable_cpus

Outcome = dict[str, Any]
EXECUTORS = ("local", "ray")


def run_trial(config: dict[str, Any], runs: str, threads: int | None = None, wait: bool = False,
              replace: str | None = None, tracking: dict[str, Any] | None = None,
              keep_checkpoints: bool = False) -> Outcome:
    """Claim and run one trial into ``runs/<run_id>``; returns
    ``{"run_id", "status", "ran", "reason", "time_s", "cpu_s"}``.

    The trial's run directory is claimed with its file lock (`grouprobust.rundir.RunDirectory.claim`)
    before anything is checked, so of several processes sharing a sweep exactly one runs it. If
    another process holds the claim, ``status`` is ``busy`` and nothing ran (with ``wait`` True the
    call waits for the claim instead). Once claimed, a trial that is finished (or failed, unless it
    is the failed run directory with token ``replace`` (`grouprobust.rundir.directory_token`) that
    this process planned to retry) is not
    run again: ``ran`` is False and ``status`` tells what the other process left.

    ``status`` is otherwise ``finished`` or ``failed``; a failure of any kind (a diverging loss, a bad
    combination only found while training, a bug) is written as a failed run directory with its
    reason instead of stopping the sweep. A trial stopped by SIGTERM or SIGINT after writing a
    checkpoint (`grouprobust.errors.RunInterrupted`) is ``interrupted``, with its ``signal``: nothing
    is written at its run directory, and the next sweep resumes it from the checkpoint
    (kept after the trial finishes with ``keep_checkpoints``). ``time_s`` is wall-clock and ``cpu_s`` this process's CPU
    time, in seconds. ``threads`` sets torch's intra-op thread count (None: the policy of
    `grouprobust.threads`, applied by `grouprobust.runs.run`). Every trial, loop or two-stage, runs
    through `grouprobust.runs.run`. ``tracking`` holds `grouprobust.tracking.make_tracker`'s
    arguments (``track``, ``store_dir``, ``experiment``); the tracker is built here, in the worker.
    """

    apply_thread_policy(threads)
    cfg = RunConfig.from_dict(config)
    out = Path(runs) / cfg.run_id
    start, cpu = time.perf_counter(), time.process_time()
    writer = RunDirectory(out, cfg.to_dict())
    try:
        with writer.claim(wait=wait):
            done = _done_elsewhere(out, replace)
            if done is not None:
                return {"run_id": cfg.run_id, "ran": False, "time_s": 0.0, "cpu_s": 0.0, **done}
            return _run_claimed_trial(cfg, writer, start, cpu, tracking, keep_checkpoints)
    except RunBusyError:  # raised only by the claim: errors of the run itself are recorded as failed
        return {"run_id": cfg.run_id, "status": "busy", "ran": False, "reason": None, "time_s": 0.0, "cpu_s": 0.0}


def _run_claimed_trial(cfg: RunConfig, writer: RunDirectory, start: float, cpu: float,
                       tracking: dict[str, Any] | None, keep_checkpoints: bool = False) -> Outcome:
    """Run the claimed trial; any failure is written as a failed run directory (see `run_trial`)."""
    try:
        run(cfg, writer.path, tracker=trial_tracker(tracking), keep_checkpoints=keep_checkpoints)
        return {"run_id": cfg.run_id, "status": "finished", "ran": True, "reason": None,
                "time_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    except RunInterrupted as err:  # checkpointed: the next sweep resumes it
        return {"run_id": cfg.run_id, "status": "interrupted", "ran": True, "reason": str(err),
                "signal": err.signum, "time_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    except DivergedError as err:  # `run` has already written error.json
        reason = str(err)
    except DiskError:  # a full or read-only disk is no fault of the trial: the sweep stops, the trial stays to run
        raise
    except Exception as err:  # noqa: BLE001 - recorded as a failed trial; the sweep goes on
        reason = str(err) if isinstance(err, GroupRobustError) else f"{type(err).__name__}: {err}"
        writer.open()
        writer.fail(reason, {"error_type": type(err).__name__,
                             "traceback": None if isinstance(err, GroupRobustError) else traceback.format_exc()})
    return {"run_id": cfg.run_id, "status": "failed", "ran": True, "reason": reason,
            "time_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def _done_elsewhere(out: Path, replace: str | None) -> dict[str, Any] | None:
    """What another process left at ``out`` that this one must not run again (its status and reason), or
    None if the trial is to run: absent, or the very failed run (token ``replace``) planned for a retry."""
    status = run_status(out)
    if status == "finished":
        return {"status": "finished", "reason": None}
    if status == "failed" and (replace is None or directory_token(out) != replace):
        return {"status": "failed", "reason": read_json(out / "error.json").get("reason")}
    return None


def trial_tracker(tracking: dict[str, Any] | None) -> Any:
    """The tracker a trial sends its run to, or None; one that cannot be built is a warning, not a failed trial."""
    if not tracking or not tracking.get("track"):
        return None
    try:
        return make_tracker(**tracking)
    except Exception as err:  # noqa: BLE001 - tracking must never lose the run
        logging.getLogger("grouprobust.tracking").warning("experiment tracking is off for this trial (%s)",
                                                          str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def lost_outcome(trial: Trial, reason: str) -> Outcome:
    """The outcome of a trial whose worker process died (out of memory, a lost node): no run directory."""
    return {"run_id": trial.run_id, "status": "lost", "ran": True, "reason": reason, "time_s": 0.0, "cpu_s": 0.0}


class LocalExecutor:
    """Runs trials on this machine: serially in this process with one slot, else in one worker process per
    slot (`grouprobust.sweep.placement.local_slots`: one per visible GPU, or per ``gpus_per_trial`` of one),
    each pinned to its GPU. ``threads`` None: each trial's count from the thread policy in this process,
    the usable CPUs shared out among the workers otherwise."""

    def __init__(self, threads: int | None = None, gpus_per_trial: float | None = None):
        self.threads = threads
        self.placement: list[Slot] = local_slots(placement.visible_gpus(), gpus_per_trial)
        self.slots = len(self.placement)
        self._pools: list[ProcessPoolExecutor | None] = [None] * self.slots

    def run(self, trials: list[Trial], runs: Path, wait: bool = False, replace: dict[str, str] | None = None,
            tracking: dict[str, Any] | None = None, keep_checkpoints: bool = False) -> Iterator[Outcome]:
        """Yield each trial's outcome (`run_trial` with this executor's ``threads``, ``wait``, ``tracking`` and
        ``keep_checkpoints``; ``replace``: run id -> token of a failed run to retry) as it finishes: in order
        with one slot, in completion order with several."""
        replace = replace or {}
        if self.slots == 1:
            for trial in trials:
                yield run_trial(trial.config.to_dict(), str(runs), self.threads, wait=wait,
                                replace=replace.get(trial.run_id), tracking=tracking,
                                keep_checkpoints=keep_checkpoints)
            return
        threads = self.threads or max(1, usable_cpus() // self.slots)
        queue, free = list(trials), list(range(self.slots))
        running: dict[Future, tuple[int, Trial]] = {}
        while queue or running:
            while queue and free:
                slot, trial = free.pop(0), queue.pop(0)
                task = self._pool(slot).submit(run_trial, trial.config.to_dict(), str(runs), threads, wait,
                                               replace.get(trial.run_id), tracking, keep_checkpoints)
                running[task] = (slot, trial)
            done, _ = wait_for(running, return_when=FIRST_COMPLETED)
            for task in done:
                slot, trial = running.pop(task)
                free.append(slot)
                try:
                    yield task.result()
                except BrokenProcessPool as err:
                    self._pools[slot] = None  # a fresh worker for the next trial on this slot
                    yield lost_outcome(trial, f"the worker process died ({err})")

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        """The worker process of ``slot``, started (fresh, by spawn) on first use and pinned to its GPU."""
        pool = self._pools[slot]
        if pool is None:
            gpu = self.placement[slot].gpu
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=placement.pin_gpu,
                                       initargs=(placement.parent_device_id(gpu if gpu is not None else 0),))
            self._pools[slot] = pool
        return pool

    def close(self) -> None:
        """Stop the worker processes (none with one slot)."""
        for pool in self._pools:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        self._pools = [None] * self.slots


class RayExecutor:
    """Runs trials as Ray tasks of ``cpus_per_trial`` CPUs (default ``threads``, else 1) and ``gpus_per_trial``
    GPUs on a local instance or a cluster: Ray reserves them, so a task's share of its node is exactly
    that; its torch threads are ``threads``, default its CPUs.

    With ``address`` None a local instance with ``workers`` CPUs and this machine's GPUs is started (and
    shut down by `close`); otherwise the cluster at ``address`` is joined, and every node must see the
    output directory (a shared file system). ``gpus_per_trial`` None gives each trial an equal share of
    the cluster's GPUs (none if it has none; `default_gpu_share`). GPUs asked for where there are none,
    or a trial no node can hold, are refused in one line (`grouprobust.sweep.placement.cluster_slots`).
    """

    def __init__(self, workers: int = 2, address: str | None = None, gpus_per_trial: float | None = None,
                 threads: int | None = None, cpus_per_trial: float | None = None):
        check_gpus_per_trial(gpus_per_trial)
        check_cpus_per_trial(cpus_per_trial)
        try:
            import ray
        except ImportError:
            raise GroupRobustError("the Ray executor needs Ray; install it with `pip install grouprobust[ray]` "
                                   "or use the local executor", subject="executor") from None
        local_gpus = placement.visible_gpus() if address is None else 0
        if address is not None:
            _check_reachable(address)
        elif gpus_per_trial and not local_gpus:  # refused before a local instance starts
            local_slots(0, gpus_per_trial)
        self.ray = ray
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                 "configure_logging": True}
        try:
            if address is None:
                ray.init(num_cpus=workers, num_gpus=local_gpus, **quiet)
            else:
                ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        except Exception as err:  # noqa: BLE001 - Ray's own errors (connection, authentication) become one line
            target = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise GroupRobustError(_ray_failure(target, err), subject="address") from None
        self.cpus_per_trial = float(cpus_per_trial or threads or 1)
        try:
            nodes = cluster_nodes(ray)
            self.gpus_per_trial = default_gpu_share(nodes, self.cpus_per_trial) if gpus_per_trial is None \
                else float(gpus_per_trial)
            self.placement = cluster_slots(nodes, self.gpus_per_trial, self.cpus_per_trial)
        except GroupRobustError:
            ray.shutdown()
            raise
        self.slots = len(self.placement)
        self.threads = threads or max(1, int(self.cpus_per_trial))
        self.task = ray.remote(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                               max_retries=0)(run_trial)

    def run(self, trials: list[Trial], runs: Path, wait: bool = False, replace: dict[str, str] | None = None,
            tracking: dict[str, Any] | None = None, keep_checkpoints: bool = False) -> Iterator[Outcome]:
        """Submit every trial (`run_trial` with ``wait``, ``replace``, ``tracking`` and ``keep_checkpoints`` as
        in `LocalExecutor.run`) and yield outcomes in completion order."""
        ray = self.ray
        runs_text = str(Path(runs).resolve())
        replace = replace or {}
        pending = [self.task.remote(t.config.to_dict(), runs_text, self.threads, wait, replace.get(t.run_id), tracking,
                                    keep_checkpoints) for t in trials]
        by_ref = dict(zip(pending, trials))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker itself died (e.g. out of memory)
                    yield lost_outcome(by_ref[ref], str(err).splitlines()[0])

    def close(self) -> None:
        """Shut down the Ray connection (and the local instance, if this executor started one)."""
        self.ray.shutdown()


def cluster_nodes(ray: Any) -> list[dict[str, float]]:
    """The resources (``{"CPU": n, "GPU": m, ...}``) of each live node of the Ray cluster joined."""
    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive", True)]


def default_gpu_share(nodes: list[dict[str, float]], cpus_per_trial: float) -> float:
    """Each trial's equal share of the cluster's GPUs when none is asked for: its GPUs over the trials its
    CPUs hold at once, at most one; 0 without GPUs."""
    gpus = sum(node.get("GPU", 0.0) for node in nodes)
    trials = max(1, sum(int(node.get("CPU", 0.0) // cpus_per_trial) for node in nodes))
    return min(1.0, gpus / trials) if gpus else 0.0


def _ray_failure(target: str, err: Exception) -> str:
    """One line saying why Ray could not start or join ``target``, and the fix."""
    cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if type(err).__name__ == "AuthenticationError" or "token" in cause.lower() or "authenticat" in cause.lower():
        return (f"could not join {target}: it requires token authentication ({type(err).__name__}: "
                f"{cause.split('. ')[0].rstrip('.')}); set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN "
                "(or a file named by RAY_AUTH_TOKEN_PATH) in this shell, or use the local executor")
    return f"could not start or join {target} ({type(err).__name__}: {cause}); check the address or use the local executor"


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


def check_executor(name: str, workers: int = 1, address: str | None = None, gpus_per_trial: float | None = None,
                   cpus_per_trial: float | None = None) -> None:
    """Raise a one-line error for an unknown executor or a bad combination of its options (without
    looking at the machine: `executor_slots` does)."""
    if name not in EXECUTORS:
        raise GroupRobustError(f"unknown executor {name!r}; use local or ray", subject="executor")
    if workers < 1:
        raise GroupRobustError(f"workers must be >= 1, got {workers}", subject="workers")
    check_gpus_per_trial(gpus_per_trial)
    check_cpus_per_trial(cpus_per_trial)
    if name == "local":
        if workers > 1 or address:
            raise GroupRobustError("the local executor runs one trial at a time in this process (one per GPU with "
                                   "GPUs); use executor ray for workers > 1 or an address", subject="executor")
        if cpus_per_trial is not None:
            raise GroupRobustError("cpus_per_trial reserves CPUs on the Ray executor; the local executor's trials "
                                   "take --threads torch threads each", subject="cpus_per_trial")


def executor_slots(name: str, workers: int = 1, address: str | None = None, gpus_per_trial: float | None = None,
                   cpus_per_trial: float | None = None, threads: int | None = None) -> list[Slot]:
    """The slots the executor would run trials on, without starting it (a cluster at ``address`` is
    joined to read its nodes, then left); raises like the executor would (GPUs asked for where there are none)."""
    check_executor(name, workers, address, gpus_per_trial, cpus_per_trial)
    if name == "local":
        return local_slots(placement.visible_gpus(), gpus_per_trial)
    cpus = float(cpus_per_trial or threads or 1)
    if address is None:
        nodes = [{"CPU": float(workers), "GPU": float(placement.visible_gpus())}]
    else:
        executor = RayExecutor(workers, address, gpus_per_trial, threads, cpus_per_trial)
        executor.close()
        return executor.placement
    share = default_gpu_share(nodes, cpus) if gpus_per_trial is None else gpus_per_trial
    return cluster_slots(nodes, share, cpus)


def make_executor(name: str, workers: int = 1, address: str | None = None, threads: int | None = None,
                  gpus_per_trial: float | None = None, cpus_per_trial: float | None = None
                  ) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``), checked by `check_executor`; ``threads``: torch
    threads per trial (None: the thread policy locally, the trial's CPUs on Ray); ``gpus_per_trial`` and
    ``cpus_per_trial`` as `LocalExecutor` and `RayExecutor` take them."""
    check_executor(name, workers, address, gpus_per_trial, cpus_per_trial)
    if name == "local":
        return LocalExecutor(threads, gpus_per_trial)
    return RayExecutor(workers, address, gpus_per_trial, threads, cpus_per_trial)
