"""Concurrent writers: several `train` / `sweep` processes on one output directory, and stale locks.

Every test here starts real processes: the claims are OS file locks, which only separate processes
contend for.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import yaml

from grouprobust.cli import main
from grouprobust.config import resolve_config
from grouprobust.rundir import RunBusyError, directory_token
from grouprobust.runs import run
from grouprobust.sweep import run_sweep
from grouprobust.sweep.executors import run_trial
from grouprobust.sweep.store import MANIFEST, runs_dir

SRC = str(Path(__file__).resolve().parents[2] / "src")
WORKER = str(Path(__file__).resolve().parents[1] / "concurrent_worker.py")
TINY = {"n": 200, "n_val": 100, "n_test": 100}
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def sweep_file(tmp_path, lrs, seeds=(0, 1, 2), epochs=2):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"seeds": list(seeds), "set": {"epochs": epochs, "model": "linear"},
                                    "datasets": {"spurious-gaussian": TINY}, "methods": {"erm": {"grid": {"lr": lrs}}}}))
    return path


def run_dirs(out):
    return sorted(p for p in runs_dir(out).iterdir() if p.is_dir() and not p.name.startswith("."))


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def start_workers(tmp_path, args_per_worker):
    """Start one `concurrent_worker.py` per argument list, release them at once; returns their JSON lines."""
    markers, go = tmp_path / "markers", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, WORKER, *map(str, args), str(markers), str(go)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in args_per_worker]
    wait_for(lambda: len(list(tmp_path.glob("go.ready-*"))) == len(procs), timeout=120, what="the workers to start")
    go.touch()  # all start at the same moment
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_three_sweeps_on_one_directory_share_the_work(tmp_path):
    path = sweep_file(tmp_path, [0.001, 0.01, 0.1], epochs=2)  # 9 trials
    out = tmp_path / "out"
    results = start_workers(tmp_path, [("sweep", path, out)] * 3)

    executions = Counter(line.split()[0] for line in (tmp_path / "markers").read_text().splitlines())
    dirs = run_dirs(out)
    assert len(dirs) == 9 and set(executions) == {d.name for d in dirs}
    assert max(executions.values()) == 1, f"trials ran twice: {executions}"
    assert sum(r["ran"] for r in results) == 9  # each worker reports exactly what it executed
    assert all(r["failed"] == 0 and r["ran"] + r["elsewhere"] == r["total"] == 9 for r in results), results
    for d in dirs:  # every finished trial is intact: its own config, a full history, a result
        assert not (d / "error.json").exists()
        assert json.loads((d / "config.json").read_text())["run_id"] == d.name
        assert len((d / "history.jsonl").read_text().splitlines()) == 2
        assert json.loads((d / "result.json").read_text())["run_id"] == d.name
    assert {t["run_id"] for t in json.loads((out / MANIFEST).read_text())["trials"]} == {d.name for d in dirs}
    assert not [p for p in runs_dir(out).iterdir() if p.is_dir() and p.name.startswith(".")]


@pytest.mark.slow
def test_two_trains_with_different_configs_on_one_out_one_wins_intact(tmp_path):
    out = tmp_path / "run"
    results = start_workers(tmp_path, [("train", 3, out), ("train", 4, out)])
    errors = [r["error"] for r in results]
    assert sum(e is None for e in errors) == 1, errors
    loser = next(e for e in errors if e is not None)
    assert "being written by another process" in loser or "already holds a different run" in loser
    winner_epochs = 3 if errors[0] is None else 4
    assert json.loads((out / "config.json").read_text())["hparams"]["epochs"] == winner_epochs
    assert len((out / "history.jsonl").read_text().splitlines()) == winner_epochs
    assert (out / "result.json").is_file() and (out / "model.pt").is_file()


HOLDER = """
import sys, time
from pathlib import Path
from grouprobust.rundir import RunDirectory
writer = RunDirectory(Path(sys.argv[1]), {"run_id": "x"})
with writer.claim():
    Path(sys.argv[2]).touch()
    time.sleep(120)
"""


def test_a_killed_holders_claim_is_recovered_by_a_waiting_sweep(tmp_path):
    path = sweep_file(tmp_path, [0.01], seeds=(0, 1), epochs=2)
    from grouprobust.sweep import prepare

    _, todo = prepare(path, tmp_path / "out")
    victim = todo.to_run[0].run_id
    runs_dir(tmp_path / "out").mkdir(parents=True)
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(runs_dir(tmp_path / "out") / victim), str(ready)],
                              env=ENV)
    wait_for(ready.exists, what="the holder to claim the trial")
    summaries = []
    sweeper = threading.Thread(target=lambda: summaries.append(run_sweep(path, tmp_path / "out")))
    sweeper.start()
    # The free trial runs; the claimed one waits for its holder.
    wait_for(lambda: len(run_dirs(tmp_path / "out")) == 1, what="the free trial to finish")
    time.sleep(0.3)
    assert sweeper.is_alive() and not (runs_dir(tmp_path / "out") / victim).exists()
    holder.send_signal(signal.SIGKILL)  # its lock dies with it: the sweep takes the trial over
    holder.wait()
    sweeper.join(timeout=60)
    assert not sweeper.is_alive()
    summary = summaries[0]
    assert summary.ran == 2 and summary.finished == 2 and summary.elsewhere == 0
    assert (runs_dir(tmp_path / "out") / victim / "result.json").is_file()


def test_claim_is_refused_while_another_process_holds_it(tmp_path, capsys):
    cfg = resolve_config("spurious-gaussian", "erm", data=TINY, hparams={"epochs": 1, "model": "linear"})
    out, ready = tmp_path / cfg.run_id, tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready)], env=ENV)
    try:
        wait_for(ready.exists, what="the holder to claim the run")
        with pytest.raises(RunBusyError, match="being written by another process"):
            run(cfg, out)
        outcome = run_trial(cfg.to_dict(), str(tmp_path))  # a sweep trial: reported busy, not failed
        assert outcome["status"] == "busy" and not outcome["ran"]
        with pytest.raises(SystemExit) as exit_info:  # the command line: one line, exit 2
            main(["train", "--dataset", "spurious-gaussian", "--out", str(out), "-q", "--epochs", "1"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert "being written by another process" in err and "--out" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not out.exists()
    run(cfg, out)  # the holder was killed: its claim is gone with it
    assert (out / "result.json").is_file()


def test_a_failed_trial_is_retried_once_when_two_processes_retry_it(tmp_path):
    cfg = resolve_config("spurious-gaussian", "erm", data=TINY,
                         hparams={"epochs": 1, "model": "linear", "optimizer": "sgd", "lr": 1e38})  # diverges
    out = tmp_path / cfg.run_id
    assert run_trial(cfg.to_dict(), str(tmp_path))["status"] == "failed"
    token = directory_token(out)  # two processes plan --retry-failed against this failed run
    first = run_trial(cfg.to_dict(), str(tmp_path), replace=token)
    assert first["ran"] and first["status"] == "failed"  # it diverges again: a new failed run directory
    second = run_trial(cfg.to_dict(), str(tmp_path), replace=token)
    assert not second["ran"] and second["status"] == "failed" and "epoch 1" in second["reason"]
    assert directory_token(out) != token and (out / "error.json").is_file()
