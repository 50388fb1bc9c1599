"""What this process may use and how busy the machine is: affinity mask, cgroup CPU quota, ``/proc`` load.

The readings behind the thread policy (`grouprobust.threads.policy`); each falls back to a safe value
where the file cannot be read. Imports no torch.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's ``cpu`` controller (None if absent)."""
    text = _read(proc_cgroup) or ""
    v2 = v1 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, path: str | None) -> list[Path]:
    """``root/path``, its parents, up to ``root`` itself (the quota of any ancestor caps the process)."""
    out = [root]
    if path:
        parts = [p for p in path.split("/") if p]
        out = [root.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)] + [root]
    return out


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), the smallest over its ancestors; None if unlimited.

    Reads cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) and cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: unlimited), under ``root``.
    """
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    for folder in _ancestors(root, v2):
        fields = (_read(folder / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = float(fields[0]), float(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    for base in (root / "cpu", root / "cpu,cpuacct"):
        for folder in _ancestors(base, v1):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            try:
                q, p = float(quota or "-1"), float(period or "0")
            except ValueError:
                continue
            if q > 0 and p > 0:
                limits.append(q / p)
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """How many CPUs this process's affinity mask allows (``os.cpu_count()`` where there is no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(affinity: int | None = None, quota: float | None | str = "read") -> int:
    """CPUs this process may really use: the affinity count capped by the cgroup quota (rounded up), at least 1."""
    affinity = affinity_cpus() if affinity is None else affinity
    limit = cgroup_cpu_limit() if quota == "read" else quota
    cpus = affinity if limit is None else min(affinity, math.ceil(limit - 1e-9))
    return max(1, int(cpus))


def running_tasks(task_dir: Path = Path("/proc/self/task")) -> int:
    """Threads of this process that are running or runnable now (state ``R``; 1 where it cannot be read)."""
    count = 0
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return 1
    for task in tasks:
        stat = _read(task / "stat") or ""
        # the state follows the parenthesised command name, which may itself contain spaces
        if stat[stat.rfind(")") + 2:stat.rfind(")") + 3] == "R":
            count += 1
    return max(1, count)


def busy_cpus(proc_stat: Path = Path("/proc/stat"), samples: int = 5, interval_s: float = 0.01,
              task_dir: Path = Path("/proc/self/task")) -> float:
    """Runnable tasks of other processes right now: the median of ``samples`` reads of ``procs_running``
    minus this process's own running threads (`running_tasks`: the reading thread, and OpenBLAS workers
    still spinning after the caller's last matrix product, which are not another process's load);
    0 where ``/proc/stat`` cannot be read."""
    values = []
    for i in range(samples):
        for line in (_read(proc_stat) or "").splitlines():
            if line.startswith("procs_running"):
                values.append(max(0, int(line.split()[1]) - running_tasks(task_dir)))
        if i + 1 < samples:
            time.sleep(interval_s)
    return float(statistics.median(values)) if values else 0.0


def torch_default_threads() -> int:
    """The count torch starts with when no variable is set: one per physical core of the machine
    (counted from ``/sys/devices/system/cpu``; ``os.cpu_count()`` where that cannot be read)."""
    cores = set()
    for folder in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        siblings = _read(folder / "topology" / "thread_siblings_list")
        if siblings:
            cores.add(siblings)
    return len(cores) or os.cpu_count() or 1


# The last load reading ``(time.monotonic(), busy_cpus(...))`` (`recent_busy_cpus`): even the short one
# (three samples, 10 ms) can exceed a small last-layer fit, so fits in quick succession share one.
_busy_seen: tuple[float, float] | None = None
BUSY_FRESH_S = 1.0


def recent_busy_cpus(short: bool = False) -> float:
    """`busy_cpus` (CPUs kept busy by other processes), read at most once every `BUSY_FRESH_S` seconds: an
    entry point's reading (40 ms) or, with ``short``, a last-layer fit's (three samples over 10 ms),
    shared by the calls that follow it (e.g. the CLI's and the run's own policy calls)."""
    global _busy_seen
    now = time.monotonic()
    if _busy_seen is None or now - _busy_seen[0] > BUSY_FRESH_S:
        _busy_seen = (now, busy_cpus(samples=3, interval_s=0.005) if short else busy_cpus())
    return _busy_seen[1]
