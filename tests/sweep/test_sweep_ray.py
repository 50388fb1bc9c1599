"""The Ray executor on a local 2-CPU instance gives the same runs as the in-process executor."""

import json

import pytest
import yaml

from grouprobust.sweep import run_sweep
from grouprobust.sweep.store import runs_dir

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_executor_two_workers_matches_local(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "seeds": [0, 1], "set": {"epochs": 2, "model": "linear"},
        "datasets": {"spurious-gaussian": {"n": 300, "n_val": 100, "n_test": 100}},
        "methods": {"erm": {"grid": {"lr": [0.001, 0.01]}}}}))
    slots = []
    summary = run_sweep(path, tmp_path / "ray", executor="ray", workers=2, on_start=lambda plan, n: slots.append(n))
    assert slots == [2]
    assert summary.total == 4 and summary.finished == 4 and not summary.failed
    import ray

    assert not ray.is_initialized()  # the local instance was shut down

    # A run made by a Ray worker equals the same trial run in this process (determinism on CPU).
    local = run_sweep(path, tmp_path / "local")
    assert local.finished == 4
    for run in (p for p in runs_dir(tmp_path / "local").iterdir() if p.is_dir()):  # not the runs' lock files
        remote = runs_dir(tmp_path / "ray") / run.name
        assert json.loads((remote / "config.json").read_text())["run_id"] == run.name
        a, b = (json.loads((d / "result.json").read_text()) for d in (run, remote))
        assert a["metrics"] == b["metrics"] and a["selected"] == b["selected"]

    # Re-running with Ray skips everything and does not start Ray at all.
    again = run_sweep(path, tmp_path / "ray", executor="ray", workers=2)
    assert again.outcomes == [] and again.skipped_finished == 4
