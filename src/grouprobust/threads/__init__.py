"""The CPU thread policy: how many intra-op threads torch uses, chosen from the CPUs this process may use.

torch's own default is one OpenMP thread per physical core of the machine, spinning between
parallel regions; it ignores affinity masks, cgroup CPU quotas (clusters, containers), other
sweep workers and other busy processes, and a spinning thread that shares a core with a busy
process stalls every barrier (a 3-epoch colored-digits run: 9 s quiet, 90 s or more at load 4).
The policy, applied by every entry point (the CLI commands, `grouprobust.runs.run`, sweep
workers, feature extraction):

* **usable CPUs** = the affinity mask (`os.sched_getaffinity`), capped by the cgroup v2 quota
  (``cpu.max``) or v1 quota (``cpu.cfs_quota_us / cpu.cfs_period_us``), rounded up;
* **share** = usable CPUs divided among ``workers`` concurrent workers of this process (at least 1);
* **idle** = usable CPUs minus the runnable tasks of other processes (``procs_running`` in
  ``/proc/stat``, sampled a few times; system-wide, so scaled to the usable fraction of the machine);
* **threads** = ``max(1, min(share, idle))``, chosen when a run starts.

The user's own setting always wins: ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) in the
environment, a count passed explicitly (``threads=``, the CLI's ``--threads``), or a call to
``torch.set_num_threads`` (detected as a count that differs from torch's default, or from the
policy's last choice).

**Passive waiting.** OpenMP threads should sleep, not spin, between parallel regions
(``OMP_WAIT_POLICY=PASSIVE``, after a short spin: ``GOMP_SPINCOUNT``, see `prefer_passive_wait`);
the variables are read once, when the OpenMP runtime starts, i.e.
when torch is first imported. The CLI sets it (unless the user did) before importing torch
(`prefer_passive_wait`); Python users set it themselves before importing torch, e.g.
``OMP_WAIT_POLICY=PASSIVE python script.py``.

Modules: `policy` (the rule above, `apply_thread_policy`), `machine` (what it reads: CPUs, quota, load),
`environment` (the user's variables and the wait policy), `native` (numpy's and scipy's pools in library
calls). A leaf package: it imports torch only inside the functions that set or read its threads.
"""

from grouprobust.threads.environment import (NATIVE_ENV, SPIN_COUNT, USER_ENV, check_thread_variable, check_threads,
                                             invalid_thread_variables, is_thread_count, prefer_passive_wait)
from grouprobust.threads.machine import (affinity_cpus, busy_cpus, cgroup_cpu_limit, recent_busy_cpus, running_tasks,
                                         torch_default_threads, usable_cpus)
from grouprobust.threads.native import (RECHECK_S, RECHECK_VOTES, fix_native_threads, native_thread_policy,
                                        recheck_native_threads)
from grouprobust.threads.policy import (ThreadChoice, apply_thread_policy, current_choice, policy_threads,
                                        thread_environment, user_setting)

__all__ = ["NATIVE_ENV", "RECHECK_S", "RECHECK_VOTES", "SPIN_COUNT", "USER_ENV", "ThreadChoice", "affinity_cpus",
           "apply_thread_policy", "busy_cpus", "cgroup_cpu_limit", "check_thread_variable", "check_threads",
           "current_choice", "fix_native_threads", "invalid_thread_variables", "is_thread_count",
           "native_thread_policy", "policy_threads", "prefer_passive_wait", "recent_busy_cpus", "recheck_native_threads",
           "running_tasks", "thread_environment", "torch_default_threads", "usable_cpus", "user_setting"]
