"""A run killed with SIGKILL at a random moment and run again is the uninterrupted run, for every loop method.

Each run is a process forked from one forkserver (`resume_worker`): killed once at a random moment after its
first checkpoint appears, resumed and killed again after its next checkpoint, then resumed to the end. Its
``result.json`` (but for time and ``resumed_at``), ``history.jsonl`` (but for time) and ``model.pt`` must be
those of the same config trained in one go.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import sys
import time
from pathlib import Path

import pytest
import torch

from grouprobust.checkpoint import checkpoint_path
from grouprobust.config import resolve_config
from grouprobust.methods.base import Method
from grouprobust.methods.registry import get_method, method_names

pytestmark = pytest.mark.slow

LOOP_METHODS = [name for name in method_names() if issubclass(get_method(name), Method)]
DATA = {"n": "600", "n_val": "300", "n_test": "300"}
#: every loop feature whose state a checkpoint must carry: schedule, accumulation, clipping
TRAINING = {"epochs": "8", "batch_size": "32", "hidden": "16", "scheduler": "linear", "warmup_frac": "0.1",
            "accumulate": "2", "grad_clip": "1.0"}
#: each method's own state exercised: annealing counters crossed, adaptive beta, a short stage 1
OWN = {"jtt": {"stage1_epochs": "1"}, "gerne-pseudo": {"erm_epochs": "1"}, "gerne": {"beta_schedule": "adaptive"},
       "irm": {"irm_anneal_iters": "30"}, "vrex": {"vrex_anneal_iters": "30"},
       "erm": {"class_weights": "drw", "drw_start": "3"}}
#: a run counted in steps, checkpointed every few steps (inside epochs)
STEPS = {"max_steps": "60", "eval_every_steps": "15", "checkpoint_every_steps": "7"}
CASES = [(m, OWN.get(m, {})) for m in LOOP_METHODS] + [("erm", STEPS)]
PAUSE_S = 0.06  # after each evaluation point in the killed runs: a window to kill them in


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["resume_worker"])
    # The forkserver (Python 3.11) imports what it preloads on PYTHONPATH, not on this process's sys.path.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])  # tests/
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    return ctx


def _start(ctx, config: dict, out: Path, pause_s: float):
    import resume_worker

    process = ctx.Process(target=resume_worker.train, args=(config, str(out), pause_s))
    process.start()
    return process


def _wait_for(condition, what: str, process, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.exitcode is None or process.exitcode == 0, f"the run died ({process.exitcode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.005)


def _finished_run(ctx, config: dict, out: Path) -> None:
    process = _start(ctx, config, out, 0.0)
    process.join(300)
    assert process.exitcode == 0


def _result(out: Path) -> dict:
    result = json.loads((out / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in ("time_s", "resumed_at")}


def _history(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]


@pytest.mark.parametrize("method,own", CASES, ids=[m if o is not STEPS else f"{m}-steps" for m, o in CASES])
def test_a_run_killed_twice_and_resumed_is_the_uninterrupted_run(method, own, forkserver, tmp_path):
    config = resolve_config("spurious-gaussian", method, 0, DATA, {**TRAINING, **own}).to_dict()
    rng = random.Random(f"{method}{sorted(own)}")
    _finished_run(forkserver, config, tmp_path / "reference")

    out = tmp_path / "run"
    checkpoint = checkpoint_path(out, config["run_id"])
    killed = _start(forkserver, config, out, PAUSE_S)
    _wait_for(checkpoint.is_file, "first checkpoint", killed)
    time.sleep(rng.uniform(0.0, 2.5 * PAUSE_S))
    killed.kill()
    killed.join()
    assert killed.exitcode == -9, "the run finished before it could be killed"
    assert not out.exists() and checkpoint.is_file()

    first = checkpoint.stat().st_mtime_ns
    again = _start(forkserver, config, out, PAUSE_S)
    _wait_for(lambda: checkpoint.is_file() and checkpoint.stat().st_mtime_ns != first, "checkpoint after resuming",
              again)
    time.sleep(rng.uniform(0.0, 1.5 * PAUSE_S))
    again.kill()
    again.join()

    _finished_run(forkserver, config, out)
    resumed = json.loads((out / "result.json").read_text())
    assert resumed["resumed_at"]["step"] > 0
    assert _result(out) == _result(tmp_path / "reference")
    assert _history(out) == _history(tmp_path / "reference")
    mine = torch.load(out / "model.pt", weights_only=True)
    theirs = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not checkpoint.exists() and not checkpoint.parent.exists()  # removed once the run finished
