"""Several processes for one run (torchrun, DistributedDataParallel, gloo on the CPU): each rank trains on its
part of the same global batches, the DRO statistics are shared, so the run equals one process's; rank 0 alone
writes one run directory; a method that cannot run distributed is refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import grouprobust
from cli_runner import cli
from grouprobust import resolve_config, run
from grouprobust.methods.registry import METHODS

SRC = str(Path(grouprobust.__file__).resolve().parents[1])
DATA = {"n": 400, "n_val": 200, "n_test": 200}


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _torchrun(out: Path, method: str, sets: dict) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 -m grouprobust train ...`` on the CPU (gloo)."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "grouprobust",
            "train", "--dataset", "spurious-gaussian", "--method", method, "--out", str(out), "--quiet"]
    for key, value in {**{f"data:{k}": v for k, v in DATA.items()}, **sets}.items():
        flag, name = ("--data", key[5:]) if key.startswith("data:") else ("--set", key)
        args += [flag, f"{name}={value}"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("method, sets, state", [
    ("groupdro", {"epochs": 3}, "group_weights"),
    # 51 examples a batch: the ranks' parts differ in size; the worst case is taken over the whole batch
    ("cvar-dro", {"epochs": 2, "batch_size": 51, "alpha": 0.3}, None),
])
def test_two_gloo_processes_train_one_run_equal_to_one_process(tmp_path, method, sets, state):
    out = tmp_path / "ddp"
    proc = _torchrun(out, method, sets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # one run directory (and its lock), nothing half-written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ddp.lock", "ddp"]
    assert {"config.json", "history.jsonl", "result.json", "model.pt"} <= {p.name for p in out.iterdir()}
    environment = json.loads((out / "config.json").read_text())["environment"]
    assert environment["world_size"] == 2 and environment["backend"] == "gloo"

    single = tmp_path / "single"
    run(resolve_config("spurious-gaussian", method, 0, DATA, sets), single)
    two, one = _history(out), _history(single)
    assert len(two) == len(one) == sets["epochs"]
    np.testing.assert_allclose([e["train_loss"] for e in two], [e["train_loss"] for e in one], rtol=1e-5)
    if state is not None:  # the q trajectory, epoch by epoch
        np.testing.assert_allclose([e[state] for e in two], [e[state] for e in one], atol=1e-6)
        assert not np.allclose(two[0][state], two[-1][state])  # q moved: the comparison is not of constants
    a, b = (json.loads((d / "result.json").read_text()) for d in (out, single))
    assert a["selected"] == b["selected"]
    assert a["metrics"]["val"]["worst_group_acc"] == pytest.approx(b["metrics"]["val"]["worst_group_acc"], abs=1e-9)


@pytest.mark.parametrize("method", ["lff", "mixup", "irm", "jtt", "dfr"])
def test_a_method_that_cannot_run_distributed_is_refused_in_one_line(tmp_path, capsys, monkeypatch, method):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)  # as torchrun starts rank 0
    out = tmp_path / "run"
    code, _, err = cli(["train", "--dataset", "spurious-gaussian", "--method", method, "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"method {method!r} cannot train on several processes" in err
    assert not out.exists()
    monkeypatch.setenv("RANK", "1")  # the other ranks refuse silently: one line in all
    code, _, err = cli(["train", "--dataset", "spurious-gaussian", "--method", method, "--out", str(out)], capsys)
    assert code == 2 and err == ""


def test_every_loop_method_says_whether_it_runs_distributed():
    exact = {name for name, cls in METHODS.items() if cls.distributed == ""}
    assert exact == {"erm", "iw", "resample", "groupdro", "cvar-dro", "chi2-dro"}
    assert all(cls.distributed.strip() for name, cls in METHODS.items() if name not in exact)
