"""Checkpoints inside a run: SIGTERM/SIGINT stop at a step boundary with a checkpoint and the same command
resumes it; where checkpoints live and when they go; a sweep's interrupted trial is resumed, not failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from grouprobust.checkpoint import checkpoint_dir, checkpoint_path
from grouprobust.cli import train_commands
from grouprobust.config import resolve_config
from grouprobust.errors import RunInterrupted
from grouprobust.runs import run
from grouprobust.sweep import run_sweep
from grouprobust.sweep import executors
from grouprobust.sweep.store import runs_dir
from cli_runner import cli

DATA = {"n": 300, "n_val": 100, "n_test": 100}


def _kill_self_at(point: int, signum: int = signal.SIGTERM):
    """An ``on_epoch`` callback that sends ``signum`` to this process at epoch (or step) ``point``."""
    def on_epoch(done: int, loss: float) -> None:
        if done == point:
            os.kill(os.getpid(), signum)
    return on_epoch


def _same_run(a: Path, b: Path) -> None:
    """``a`` and ``b`` hold the same run: result (but for time and resume), history (but for time), model."""
    def result(p):
        return {k: v for k, v in json.loads((p / "result.json").read_text()).items() if k not in ("time_s", "resumed_at")}

    def history(p):
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
                for line in (p / "history.jsonl").read_text().splitlines()]

    assert result(a) == result(b)
    assert history(a) == history(b)
    ma, mb = torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True)
    assert all(torch.equal(ma[k], mb[k]) for k in ma) and ma.keys() == mb.keys()


def test_sigterm_mid_epoch_stops_at_a_step_boundary_and_the_same_run_resumes_it(tmp_path):
    # counted in steps, evaluated (and so signalled) every 4 steps: the signal lands inside an epoch
    cfg = resolve_config("spurious-gaussian", "groupdro", data=DATA,
                         hparams={"max_steps": 30, "eval_every_steps": 4, "batch_size": 32, "accumulate": 2,
                                  "scheduler": "cosine", "warmup_frac": 0.2})
    run(cfg, tmp_path / "whole")
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or a handler another library (Ray) installed
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg, out, on_epoch=_kill_self_at(12))
    assert (stopped.value.signum, stopped.value.step, stopped.value.exit_status) == (signal.SIGTERM, 12, 143)
    assert "run the same command again to resume" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert not out.exists() and checkpoint_path(out, cfg.run_id).is_file()
    resumed = run(cfg, out)
    assert resumed["resumed_at"] == {"epoch": 2, "step": 12}  # 5 optimizer steps an epoch: inside epoch 3
    _same_run(out, tmp_path / "whole")
    assert not checkpoint_dir(out).exists()


def test_sigint_between_epochs_checkpoints_then_resumes_with_drw_and_every_second_epoch(tmp_path):
    cfg = resolve_config("spurious-gaussian", "erm", data=DATA,
                         hparams={"epochs": 5, "class_weights": "drw", "drw_start": 2, "checkpoint_every": 2})
    run(cfg, tmp_path / "whole")
    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg, out, on_epoch=_kill_self_at(3, signal.SIGINT))
    assert (stopped.value.epoch, stopped.value.exit_status) == (3, 130)
    assert signal.getsignal(signal.SIGINT) is handler
    assert run(cfg, out)["resumed_at"] == {"epoch": 3, "step": 15}
    _same_run(out, tmp_path / "whole")


def test_checkpoints_are_kept_only_when_asked_and_never_change_the_run_id(tmp_path):
    plain = resolve_config("spurious-gaussian", "erm", data=DATA, hparams={"epochs": 3})
    rare = resolve_config("spurious-gaussian", "erm", data=DATA,
                          hparams={"epochs": 3, "checkpoint_every": 7, "checkpoint_every_steps": 3})
    assert rare.run_id == plain.run_id  # how often a run checkpoints never changes what it computes
    run(plain, tmp_path / "a", keep_checkpoints=True)
    kept = checkpoint_path(tmp_path / "a", plain.run_id)
    assert kept.is_file()
    assert torch.load(kept, weights_only=True)["loop"]["epoch"] == 2  # the last epoch needs none
    run(plain, tmp_path / "b")
    assert not checkpoint_dir(tmp_path / "b").exists()


def test_a_damaged_checkpoint_is_not_resumed_from_and_the_run_is_still_right(tmp_path, caplog):
    cfg = resolve_config("spurious-gaussian", "erm", data=DATA, hparams={"epochs": 3})
    run(cfg, tmp_path / "whole")
    out = tmp_path / "run"
    damaged = checkpoint_path(out, cfg.run_id)
    damaged.parent.mkdir()
    damaged.write_bytes(b"not a checkpoint")
    result = run(cfg, out)
    assert "resumed_at" not in result.to_dict() and "cannot be read" in caplog.text
    _same_run(out, tmp_path / "whole")


def test_train_command_stopped_by_sigint_says_how_to_resume_and_exits_130(tmp_path, capsys, monkeypatch):
    @contextmanager
    def progress(*args, **kwargs):
        yield _kill_self_at(2, signal.SIGINT)

    monkeypatch.setattr(train_commands, "training_progress", progress)
    args = ["train", "-d", "spurious-gaussian", "--data", "n=300", "--epochs", "4", "-q", "--out", str(tmp_path / "r")]
    code, _, err = cli(args, capsys)
    assert code == 130
    assert err.strip() == ("interrupted by SIGINT at epoch 2 step 10; a checkpoint is saved: run the same command "
                           "again to resume")
    monkeypatch.undo()
    code, _, _ = cli(args, capsys)
    assert code == 0
    assert json.loads((tmp_path / "r" / "result.json").read_text())["resumed_at"] == {"epoch": 2, "step": 10}


def test_a_sweep_trial_stopped_by_sigterm_is_interrupted_not_failed_and_the_next_sweep_resumes_it(
        tmp_path, monkeypatch):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"seeds": [0, 1], "set": {"epochs": 4}, "datasets": {"spurious-gaussian": DATA},
                                    "methods": {"groupdro": {}}}))
    out = tmp_path / "out"
    real_run = executors.run

    def run_signalled(*args, **kwargs):  # the first trial is signalled at its third epoch
        monkeypatch.setattr(executors, "run", real_run)
        return real_run(*args, on_epoch=_kill_self_at(3), **kwargs)

    monkeypatch.setattr(executors, "run", run_signalled)
    summary = run_sweep(spec, out)
    stopped = summary.interrupted
    assert stopped is not None and stopped["signal"] == signal.SIGTERM and summary.failed == []
    assert len(summary.outcomes) == 1  # the sweep stopped with the signalled trial
    assert [p.name for p in runs_dir(out).iterdir() if not p.name.startswith(".")] == []  # no error.json
    again = run_sweep(spec, out)
    assert again.finished == 2 and again.failed == [] and again.interrupted is None
    result = json.loads((runs_dir(out) / stopped["run_id"] / "result.json").read_text())
    assert result["resumed_at"] == {"epoch": 3, "step": 15}  # 5 batches of 64 an epoch


@pytest.mark.slow
def test_sigterm_to_a_training_process_exits_143_and_the_same_command_finishes_the_run(tmp_path):
    command = [sys.executable, "-m", "grouprobust", "train", "-d", "spurious-gaussian", "-m", "groupdro", "--data",
               "n=2000", "--epochs", "60", "--threads", "1", "-q"]
    out = tmp_path / "run"
    config = resolve_config("spurious-gaussian", "groupdro", data={"n": "2000"}, hparams={"epochs": "60"})
    checkpoint = checkpoint_path(out, config.run_id)
    process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.is_file():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint while training"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert err.strip().startswith("interrupted by SIGTERM at epoch ") and err.strip().endswith(
        "run the same command again to resume")
    assert not out.exists()
    finished = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    assert json.loads((out / "result.json").read_text())["resumed_at"]["step"] > 0
    _same_run(out, tmp_path / "whole")
