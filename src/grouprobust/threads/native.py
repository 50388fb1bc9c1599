"""numpy's and scipy's native thread pools (OpenBLAS, OpenMP) under the policy, for library calls made
outside the entry points (`native_thread_policy`, e.g. a last-layer estimator's ``fit``), and the one
place a numeric loop re-reads the load (`recheck_native_threads`: a fit of many seconds follows a
machine that gets busier or quieter). Imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from grouprobust.threads import machine, policy as _policy
from grouprobust.threads.environment import NATIVE_ENV, check_threads

_native_fixed = False


def fix_native_threads(count: int) -> None:
    """Set numpy's and scipy's native pools to ``count`` threads for the rest of the process, without
    importing torch; `native_thread_policy` then changes nothing (for numpy-only scripts and benchmarks)."""
    global _native_fixed
    from threadpoolctl import threadpool_limits

    check_threads(count)
    threadpool_limits(limits=count)
    _native_fixed = True


RECHECK_S, RECHECK_VOTES = 0.25, 3  # `recheck_native_threads`: seconds between readings, readings to act on


@dataclass
class _NativePolicy:
    """The native pools' policy in force inside `native_thread_policy` (see `recheck_native_threads`)."""

    usable: int
    ceiling: int  # never more threads than this: the share of usable CPUs, at most the pools' own counts
    current: int
    wanted: int = 0  # the count the last readings asked for, and how many in a row did
    votes: int = 0
    last_check: float = 0.0


_native_policy: _NativePolicy | None = None


@contextlib.contextmanager
def native_thread_policy() -> Iterator[int | None]:
    """For the duration of a block, limit numpy's and scipy's native thread pools (OpenBLAS, OpenMP)
    to the policy's count; yields the count set, or None when nothing was changed.

    For library calls made outside the entry points (e.g. ``GSR().fit`` in a notebook): without it,
    OpenBLAS runs one spinning thread per core beside whatever else the machine runs. Changes
    nothing when the user set ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``,
    when an entry point already applied `apply_thread_policy` (the pools are set), or when every
    pool already uses no more threads than the policy's count (a user's own threadpoolctl limit);
    it only lowers pools, and the previous limits are restored afterwards. Inside the block (pools at
    their default size included, even when the policy leaves them as they are), long fits call
    `recheck_native_threads` to follow a machine that gets busier or quieter. Imports no torch.
    """
    global _native_policy
    from threadpoolctl import threadpool_info, threadpool_limits

    if any(os.environ.get(name, "").strip() for name in NATIVE_ENV) or _policy._last is not None or _native_fixed:
        yield None
        return
    usable = machine.usable_cpus()
    count = _policy.policy_threads(usable, machine.recent_busy_cpus(short=True))
    top = max([pool.get("num_threads", 1) for pool in threadpool_info()], default=1)
    lower = top > count
    # Pools at their default size (one thread per CPU) are followed by `recheck_native_threads` even when
    # the policy leaves them as they are; pools someone already lowered are that someone's choice.
    if not lower and (top <= 1 or top < (os.cpu_count() or 1)):
        yield None
        return
    outer = _native_policy
    with threadpool_limits(limits=count if lower else None):  # restores the pools' limits on the way out
        _native_policy = _NativePolicy(usable, min(usable, top), min(count, top), last_check=time.monotonic())
        try:
            yield count if lower else None
        finally:
            _native_policy = outer


def recheck_native_threads(proc_stat: Path = Path("/proc/stat"), task_dir: Path = Path("/proc/self/task"),
                           now: float | None = None) -> int | None:
    """Inside `native_thread_policy`, follow the machine's load: returns the native pools' thread count in
    force, or None outside the policy (the user's setting, an entry point's, or nothing to limit).

    At most every `RECHECK_S` seconds it reads the runnable tasks of other processes (``procs_running``
    minus this process's own running threads) and the count the policy would choose now; when
    `RECHECK_VOTES` readings in a row ask for the same other count, the pools are set to it (never
    above the share of usable CPUs or the pools' own counts). Long iterative fits call it once an
    iteration (GSR: every outer step): a process that starts beside a fit on a 2-core machine
    otherwise leaves one of the fit's two threads sharing a core, and every BLAS call waits for it
    (a CivilComments-shape GSR fit: 12 s on one thread, 24 s on two beside one busy process).
    """
    policy = _native_policy
    if policy is None:
        return None
    now = time.monotonic() if now is None else now
    if now - policy.last_check < RECHECK_S:
        return policy.current
    policy.last_check = now
    others = machine.busy_cpus(proc_stat, samples=1, task_dir=task_dir)
    wanted = min(policy.ceiling, _policy.policy_threads(policy.usable, others))
    if wanted == policy.current:
        policy.votes = 0
        return policy.current
    policy.votes = policy.votes + 1 if wanted == policy.wanted else 1
    policy.wanted = wanted
    if policy.votes >= RECHECK_VOTES:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=wanted)  # the enclosing policy block restores the original limits
        policy.current, policy.votes = wanted, 0
    return policy.current
