"""The thread policy: how many intra-op threads torch uses (see `grouprobust.threads` for the rule).

`apply_thread_policy` is called by every entry point; the user's own setting always wins over
`policy_threads`, the count chosen from what `grouprobust.threads.machine` reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Mapping

from grouprobust.threads import machine
from grouprobust.threads.environment import USER_ENV, check_threads


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count in use and where it came from.

    ``source`` is ``policy`` (chosen here), ``requested`` (an explicit count), ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS`` (the environment) or ``torch.set_num_threads`` (the user's own call);
    ``usable_cpus``, ``busy_cpus`` and ``workers`` are what the policy saw (None when it did not run).
    """

    threads: int
    source: str
    usable_cpus: int | None = None
    busy_cpus: float | None = None
    workers: int = 1

    def to_dict(self) -> dict:
        """The choice as a JSON-serialisable dict (for ``config.json``'s environment block)."""
        return asdict(self)


def policy_threads(usable: int, busy: float, workers: int = 1, machine_cpus: int | None = None) -> int:
    """The policy's thread count: ``max(1, min(usable // workers, usable - busy_here))``, where ``busy_here``
    is ``busy`` (a system-wide count) scaled by the usable fraction of the machine's ``machine_cpus``."""
    total = machine_cpus or os.cpu_count() or usable
    share = max(1, usable // max(1, workers))
    busy_here = busy * min(1.0, usable / max(1, total))
    idle = math.floor(usable - busy_here + 1e-9)
    return max(1, min(share, idle))


_last: ThreadChoice | None = None


def user_setting(env: Mapping[str, str] | None = None) -> str | None:
    """What set the thread count if the user did: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (in ``env``,
    default the process environment), ``torch.set_num_threads``, or None."""
    env = os.environ if env is None else env
    for name in USER_ENV:
        if env.get(name, "").strip():
            return name
    import torch

    current = torch.get_num_threads()
    expected = _last.threads if _last is not None else machine.torch_default_threads()
    return "torch.set_num_threads" if current != expected else None


def _set_threads(count: int) -> None:
    """torch's intra-op threads and every native thread pool already loaded (numpy's and scipy's
    OpenBLAS, other OpenMP runtimes), through threadpoolctl: an OpenBLAS pool left at one thread per
    core spins beside a busy process just as torch's does."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(limits=count)


def apply_thread_policy(threads: int | None = None, workers: int = 1) -> ThreadChoice:
    """Set torch's intra-op thread count; returns the `ThreadChoice` in force afterwards.

    ``threads`` given: exactly that many (kept by later automatic calls). Else the user's own
    setting wins (``OMP_NUM_THREADS``, ``torch.set_num_threads``, an earlier explicit count);
    otherwise the policy's count for ``workers`` concurrent workers (see the module docstring).
    """
    global _last
    import torch

    if threads is not None:
        check_threads(threads)
        _set_threads(threads)
        _last = ThreadChoice(threads, "requested", workers=workers)
        return _last
    if _last is not None and _last.source == "requested" and torch.get_num_threads() == _last.threads:
        return _last
    check_threads(None)  # the user's variables decide from here: refuse one OpenMP would ignore
    source = user_setting()
    if source is not None:
        return ThreadChoice(torch.get_num_threads(), source, workers=workers)
    usable, busy = machine.usable_cpus(), machine.recent_busy_cpus()
    count = policy_threads(usable, busy, workers)
    _set_threads(count)
    _last = ThreadChoice(count, "policy", usable, busy, workers)
    return _last


def current_choice() -> ThreadChoice:
    """The thread count in force now and its source (``policy`` / ``requested`` if this module set it)."""
    import torch

    current = torch.get_num_threads()
    if _last is not None and _last.threads == current:
        return _last
    return ThreadChoice(current, user_setting() or "torch default")


def thread_environment() -> dict:
    """``config.json``'s environment block: the thread choice and the OpenMP wait policy in the environment."""
    return {**current_choice().to_dict(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "runtime default"),
            "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "runtime default")}
