"""The CPU thread policy (grouprobust.threads) on faked affinity masks, cgroup files and load; no timing."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grouprobust import threads
from grouprobust.threads import machine, native, policy
from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.runs import run


@pytest.fixture
def restore_threads(monkeypatch):
    """Leave torch's thread count and the policy's memory as the test found them."""
    before, last = torch.get_num_threads(), policy._last
    for name in threads.USER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(machine, "_busy_seen", None)  # each test's faked load is read afresh
    yield
    torch.set_num_threads(before)
    policy._last = last


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_and_its_ancestors(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "0::/jobs/job7\n")
    root = tmp_path / "fs"
    write(root / "jobs" / "job7" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(root, proc) is None
    write(root / "jobs" / "cpu.max", "150000 100000\n")  # a parent's quota caps the child
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    write(root / "jobs" / "job7" / "cpu.max", "50000 100000\n")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(0.5)


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "4:memory:/x\n2:cpu,cpuacct:/slurm/job1\n")
    root = tmp_path / "fs"
    folder = root / "cpu,cpuacct" / "slurm" / "job1"
    write(folder / "cpu.cfs_quota_us", "-1\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(root, proc) is None
    write(folder / "cpu.cfs_quota_us", "300000\n")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(3.0)
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing-cgroup") is None


def test_usable_cpus_takes_the_affinity_mask_and_the_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert threads.usable_cpus(quota=None) == 3
    assert threads.usable_cpus(quota=1.5) == 2  # rounded up: 1.5 CPUs of quota can run two threads half the time
    assert threads.usable_cpus(quota=8.0) == 3
    assert threads.usable_cpus(quota=0.2) == 1


def fake_tasks(root: Path, states: str) -> Path:
    """A ``/proc/self/task`` with one thread per character of ``states`` (``R`` running, ``S`` sleeping)."""
    for i, state in enumerate(states):
        write(root / str(100 + i) / "stat", f"{100 + i} (python (a) b) {state} 1 2 3\n")
    return root


def test_running_tasks_reads_each_threads_state(tmp_path):
    assert threads.running_tasks(fake_tasks(tmp_path / "t", "RSRR")) == 3  # the name's parentheses do not confuse it
    assert threads.running_tasks(tmp_path / "none") == 1


def test_busy_cpus_reads_procs_running_without_this_process(tmp_path):
    stat = tmp_path / "stat"
    write(stat, "cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    one = fake_tasks(tmp_path / "one", "R")
    assert threads.busy_cpus(stat, samples=3, interval_s=0, task_dir=one) == 3.0
    # this process's own spinning BLAS workers are not another process's load
    assert threads.busy_cpus(stat, samples=3, interval_s=0, task_dir=fake_tasks(tmp_path / "three", "RRR")) == 1.0
    assert threads.busy_cpus(tmp_path / "none", samples=2, interval_s=0, task_dir=one) == 0.0


@pytest.mark.parametrize("usable, busy, workers, machine, expected", [
    (8, 0, 1, 8, 8),      # quiet: every usable CPU
    (8, 0, 4, 8, 2),      # four workers share eight CPUs
    (2, 1, 1, 2, 1),      # one busy process on a 2-core machine: one thread
    (2, 5, 1, 2, 1),      # overloaded: never fewer than one
    (16, 3, 1, 16, 13),
    (4, 8, 1, 32, 3),     # system-wide load scaled to a 4-CPU mask of a 32-CPU machine
])
def test_policy_threads(usable, busy, workers, machine, expected):
    assert threads.policy_threads(usable, busy, workers, machine) == expected


def test_the_policy_sets_torch_threads_from_what_it_sees(monkeypatch, restore_threads):
    monkeypatch.setattr(machine, "usable_cpus", lambda: 3)
    monkeypatch.setattr(machine, "busy_cpus", lambda: 1.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    policy._last = None
    monkeypatch.setattr(machine, "torch_default_threads", lambda: torch.get_num_threads())
    choice = threads.apply_thread_policy()
    assert (choice.threads, choice.source, choice.usable_cpus) == (2, "policy", 3)
    assert torch.get_num_threads() == 2
    assert threads.apply_thread_policy(workers=3).threads == 1  # the policy's own count is no user setting


def test_the_users_setting_wins(monkeypatch, restore_threads):
    monkeypatch.setattr(machine, "usable_cpus", lambda: 4)
    monkeypatch.setattr(machine, "busy_cpus", lambda: 0.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    policy._last = None
    monkeypatch.setattr(machine, "torch_default_threads", lambda: torch.get_num_threads())
    assert threads.apply_thread_policy().threads == 4
    torch.set_num_threads(3)  # the user's own call, after the policy ran
    choice = threads.apply_thread_policy()
    assert (choice.threads, choice.source) == (3, "torch.set_num_threads")
    assert torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.apply_thread_policy().source == "OMP_NUM_THREADS"


def test_a_call_before_the_policy_ever_ran_is_detected(monkeypatch, restore_threads):
    policy._last = None
    monkeypatch.setattr(machine, "torch_default_threads", lambda: 7)  # torch would start with 7; the user set another
    monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
    choice = threads.apply_thread_policy()
    assert choice.source == "torch.set_num_threads"


def test_an_explicit_count_is_kept_and_bad_counts_refused(restore_threads):
    assert threads.apply_thread_policy(1).source == "requested"
    assert threads.apply_thread_policy().threads == 1  # run() re-applies the policy: the explicit count stays
    for bad in (0, -2, 1.5, True):
        with pytest.raises(GroupRobustError, match="threads must be a positive integer") as err:
            threads.apply_thread_policy(bad)
        assert err.value.subject == "threads"


def test_config_json_records_the_threads_but_the_run_id_does_not(tmp_path, tiny_gaussian, restore_threads):
    config = resolve_config("spurious-gaussian", "erm", 0, tiny_gaussian, {"epochs": 1})
    threads.apply_thread_policy(1)
    run_id = config.run_id
    run(config, tmp_path / "a", save_model=False)
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    assert written["environment"]["threads"] == 1 and written["environment"]["source"] == "requested"
    assert written["run_id"] == run_id
    threads.apply_thread_policy(2)
    assert config.to_dict()["environment"]["threads"] == 2
    assert config.run_id == run_id


def test_a_sweep_worker_takes_the_sweeps_thread_count(tmp_path, tiny_gaussian, restore_threads):
    from grouprobust.sweep.executors import make_executor, run_trial

    assert make_executor("local", threads=1).threads == 1
    config = resolve_config("spurious-gaussian", "erm", 0, tiny_gaussian, {"epochs": 1})
    outcome = run_trial(config.to_dict(), str(tmp_path), threads=1)
    written = json.loads((tmp_path / outcome["run_id"] / "config.json").read_text())
    assert outcome["status"] == "finished" and written["environment"]["threads"] == 1


def test_cli_refuses_a_bad_thread_count_naming_the_flag(tmp_path, capsys, restore_threads):
    from grouprobust.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "spurious-gaussian", "--out", str(tmp_path / "r"), "--threads", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "threads must be a positive integer" in err and "--threads" in err
    assert not (tmp_path / "r").exists()


PROBE = (
    "import os, sys\n"
    "seen = []\n"
    "class Probe:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' and not seen:\n"
    "            seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
    "        return None\n"
    "sys.meta_path.insert(0, Probe())\n"
    "import grouprobust.cli\n"
    "import grouprobust.runs\n"
    "import torch\n"
    "print(seen[0], torch.get_num_threads())\n"
)


def probe(wait_policy):
    """A fresh ``grouprobust.cli`` import: OMP_WAIT_POLICY when torch loads, and torch's own thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", *threads.USER_ENV)}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    policy, count = out.stdout.split()
    return policy, int(count)


@pytest.mark.slow
def test_cli_sets_passive_waiting_before_torch_is_imported_and_torch_default_is_known():
    """The OpenMP runtime reads OMP_WAIT_POLICY when torch loads: the probe records its value at that moment."""
    policy, count = probe(None)
    assert policy == "PASSIVE"
    assert count == threads.torch_default_threads()  # how a user's torch.set_num_threads is told apart
    assert probe("ACTIVE")[0] == "ACTIVE"  # the user's choice is kept


def test_passive_waiting_keeps_a_short_spin_unless_the_user_chose():
    env = {}
    assert threads.prefer_passive_wait(env) is True
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": threads.SPIN_COUNT}
    env = {"GOMP_SPINCOUNT": "0"}
    threads.prefer_passive_wait(env)
    assert env["GOMP_SPINCOUNT"] == "0"  # the user's spin count is kept
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.prefer_passive_wait(env) is False and env == {"OMP_WAIT_POLICY": "ACTIVE"}


def _pool_threads() -> dict:
    from threadpoolctl import threadpool_info

    return {(pool["internal_api"], pool["filepath"]): pool["num_threads"] for pool in threadpool_info()}


def test_native_pools_follow_the_policy_during_a_block_and_are_restored(monkeypatch, restore_threads):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    policy._last = None
    monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
    before = _pool_threads()
    with threads.native_thread_policy() as count:
        inside = _pool_threads()
    assert all(n <= 1 for n in inside.values())
    assert count == (1 if any(n > 1 for n in before.values()) else None)
    assert _pool_threads() == before


def test_native_pools_are_left_alone_when_the_user_or_an_entry_point_chose(monkeypatch, restore_threads):
    monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
    before = _pool_threads()
    policy._last = None
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    with threads.native_thread_policy() as count:
        assert count is None and _pool_threads() == before
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    policy._last = threads.ThreadChoice(2, "requested")
    with threads.native_thread_policy() as count:
        assert count is None and _pool_threads() == before


def test_a_last_layer_fit_runs_under_the_native_policy(monkeypatch, restore_threads):
    import numpy as np

    from grouprobust.lastlayer import DFR

    seen = []

    class Recorder:
        def __enter__(self):
            seen.append("in")

        def __exit__(self, *exc):
            seen.append("out")

    from grouprobust.lastlayer import _base

    monkeypatch.setattr(_base, "native_thread_policy", Recorder)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 2
    DFR(n_subsamples=1).fit(X, y, groups=y)
    assert seen == ["in", "out"]


def test_fixed_native_threads_make_the_block_policy_stand_aside(monkeypatch, restore_threads):
    monkeypatch.setattr(native, "_native_fixed", False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    policy._last = None
    before = _pool_threads()
    try:
        threads.fix_native_threads(1)
        assert all(n == 1 for n in _pool_threads().values())
        monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
        with threads.native_thread_policy() as count:
            assert count is None
    finally:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(before.values()))  # the pools started equal (one per usable core)


def test_native_pools_follow_a_machine_that_gets_busy_and_quiet_again(tmp_path, monkeypatch, restore_threads):
    from threadpoolctl import threadpool_limits

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(policy, "_last", None)
    monkeypatch.setattr(native, "_native_fixed", False)
    with threadpool_limits(limits=2):  # pools at a 2-CPU machine's default (earlier tests may have lowered them)
        before = _pool_threads()
        if max(before.values(), default=1) < 2:
            pytest.skip("OpenBLAS here cannot run two threads")
        monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
        # the reading at the block's start: quiet (later readings come from the faked /proc files below)
        monkeypatch.setattr(machine, "_busy_seen", (time.monotonic(), 0.0))
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        stat, ours = tmp_path / "stat", fake_tasks(tmp_path / "tasks", "RR")  # this fit: two running threads

        def reading(others: int, at: float) -> int | None:
            write(stat, f"procs_running {others + 2}\n")
            return threads.recheck_native_threads(stat, ours, now=at)

        assert threads.recheck_native_threads(stat, ours) is None  # outside the policy
        with threads.native_thread_policy() as count:
            assert count is None and native._native_policy.current == 2  # quiet: nothing lowered, but followed
            t0 = native._native_policy.last_check
            step = threads.RECHECK_S
            # another process appears: one reading, then one of quiet, is noise; three busy readings act
            assert [reading(o, t0 + step * (i + 1)) for i, o in enumerate([1, 0, 1, 1])] == [2] * 4
            assert reading(1, t0 + step * 4.5) == 2  # too soon after the last reading: not read
            assert reading(1, t0 + step * 6) == 1
            assert max(_pool_threads().values()) == 1
            # it leaves: three quiet readings raise the pools back, never above the pools' own count
            assert [reading(0, t0 + step * (7 + i)) for i in range(3)] == [1, 1, 2]
            assert max(_pool_threads().values()) == 2
        assert _pool_threads() == before


def test_fits_in_quick_succession_share_one_load_reading(monkeypatch, restore_threads):
    policy._last = None
    readings = []
    monkeypatch.setattr(machine, "busy_cpus", lambda **sampling: readings.append(1) or 0.0)
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    for at in (100.0, 100.5, 101.7):
        clock[0] = at
        with threads.native_thread_policy():
            pass
    assert len(readings) == 2  # the second fit, 0.5 s after the first, reused its reading; the third did not


def test_an_entry_point_and_the_run_it_starts_share_one_load_reading(monkeypatch, restore_threads):
    readings = []
    monkeypatch.setattr(machine, "busy_cpus", lambda **sampling: readings.append(sampling) or 1.0)
    monkeypatch.setattr(machine, "usable_cpus", lambda: 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.setattr(machine, "torch_default_threads", lambda: torch.get_num_threads())  # no user setting
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    for at in (100.0, 100.4, 102.0):  # the CLI's call, the run's 0.4 s later, a sweep trial's much later
        clock[0] = at
        policy._last = None
        assert threads.apply_thread_policy().threads == 2
    assert readings == [{}, {}]  # the full (entry point) reading, taken twice: the second call reused the first


@pytest.mark.parametrize("value, ok", [("2", True), (" 4 ", True), ("4,2", True), ("abc", False), ("0", False),
                                       ("-1", False), ("2.5", False), ("4,", False)])
def test_an_invalid_thread_variable_is_refused_with_the_fix(monkeypatch, restore_threads, value, ok):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    policy._last = None
    if ok:
        assert threads.apply_thread_policy().source == "OMP_NUM_THREADS"
    else:
        with pytest.raises(GroupRobustError, match=r"OMP_NUM_THREADS=.* is not a thread count; set it to a positive"):
            threads.apply_thread_policy()


def test_an_explicit_count_wins_over_an_invalid_variable(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    policy._last = None
    threads.check_threads(1)  # --threads 1: the variable is not consulted
    assert threads.apply_thread_policy(1).source == "requested"
    assert threads.apply_thread_policy().source == "requested"  # the run inside keeps the explicit count


def test_a_thread_count_above_the_machines_cpus_is_refused_here_but_not_for_a_cluster(restore_threads):
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(GroupRobustError, match=f"threads {too_many} is more than this machine's"):
        threads.apply_thread_policy(too_many)
    with pytest.raises(GroupRobustError, match="more than this machine's"):
        threads.fix_native_threads(100_000)
    threads.check_threads(too_many, here=False)  # Ray workers on other nodes may have that many


def test_cli_drops_a_bad_omp_variable_when_threads_is_given_and_refuses_it_otherwise(monkeypatch):
    from grouprobust import cli

    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    with pytest.raises(GroupRobustError, match="OMP_NUM_THREADS='abc' is not a thread count"):
        cli.check_thread_variables(["train", "--dataset", "spurious-gaussian"])
    cli.check_thread_variables(["report", "SWEEP"])  # commands without the thread policy leave it alone
    assert os.environ["OMP_NUM_THREADS"] == "abc"
    cli.check_thread_variables(["train", "--threads", "1"])  # the flag wins, and OpenMP never sees the variable
    assert "OMP_NUM_THREADS" not in os.environ
