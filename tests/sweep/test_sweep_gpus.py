"""GPUs in sweeps: refused in one line where there are none, planned on a (fake) machine or cluster with two,
and the local executor's one worker per GPU, each pinned with CUDA_VISIBLE_DEVICES and recorded in config.json."""

import json
import os
import re

import pytest
import yaml

from cli_runner import cli
from grouprobust.errors import GroupRobustError
from grouprobust.sweep import placement, run_sweep
from grouprobust.sweep.placement import Slot, cluster_slots, local_slots
from grouprobust.sweep.store import runs_dir

GRID = {"seeds": [0, 1], "set": {"epochs": 2, "model": "linear"},
        "datasets": {"spurious-gaussian": {"n": 200, "n_val": 100, "n_test": 100}},
        "methods": {"erm": {"grid": {"lr": [0.001, 0.01]}}}}


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(GRID))
    return path


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine whose torch sees two CUDA GPUs (as far as the sweep's placement can tell)."""
    monkeypatch.setattr(placement, "visible_gpus", lambda: 2)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_gpus_asked_for_without_gpus_is_one_line_and_writes_nothing(spec, tmp_path, capsys, executor):
    if placement.visible_gpus():
        pytest.skip("this machine has GPUs")
    out = tmp_path / "out"
    code, stdout, err = cli(["sweep", str(spec), "--out", str(out), "--gpus-per-trial", "0.5",
                             "--executor", executor], capsys)
    assert code == 2
    assert stdout == ""
    assert len(err.strip().splitlines()) == 1 and "asks for GPUs" in err and "--gpus-per-trial" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "1.5", "-1"])
def test_gpus_per_trial_outside_one_gpu_is_refused(spec, tmp_path, capsys, value, two_gpus):
    code, _, err = cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--gpus-per-trial", value], capsys)
    assert code == 2 and "(0, 1]" in err and not (tmp_path / "out").exists()


def test_cpus_per_trial_is_for_ray(spec, tmp_path, capsys):
    code, _, err = cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--cpus-per-trial", "2"], capsys)
    assert code == 2 and "Ray" in err and not (tmp_path / "out").exists()


def _waves(stdout: str) -> list[list[str]]:
    """The places of each wave a dry run prints, e.g. ``[["GPU 0 (0.5 of it)", "GPU 1 (0.5 of it)"], ...]``."""
    return [re.findall(r"\) on ([^;]+?)(?=;|$)", line) for line in stdout.splitlines() if "wave" in line]


def test_dry_run_places_one_trial_per_gpu_locally(spec, tmp_path, capsys, two_gpus):
    code, stdout, _ = cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert code == 0
    assert "2 trial(s) at a time on 2 GPU(s), 1 GPU per trial" in stdout
    assert _waves(stdout) == [["GPU 0", "GPU 1"], ["GPU 0", "GPU 1"]]
    assert not (tmp_path / "out").exists()


def test_dry_run_places_half_gpus_two_per_gpu(spec, tmp_path, capsys, two_gpus):
    code, stdout, _ = cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run", "--gpus-per-trial", "0.5"],
                          capsys)
    assert code == 0
    assert "4 trial(s) at a time on 2 GPU(s), 0.5 GPU per trial" in stdout
    assert _waves(stdout) == [["GPU 0 (0.5 of it)", "GPU 1 (0.5 of it)", "GPU 0 (0.5 of it)", "GPU 1 (0.5 of it)"]]


def test_dry_run_on_a_ray_instance_is_bounded_by_cpus_and_gpus(spec, tmp_path, capsys, two_gpus):
    pytest.importorskip("ray")
    args = ["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run", "--executor", "ray"]
    # 4 CPUs of 2 each hold 2 trials, though the GPUs would hold 4 halves
    code, stdout, _ = cli(args + ["--workers", "4", "--gpus-per-trial", "0.5", "--cpus-per-trial", "2"], capsys)
    assert code == 0 and "2 trial(s) at a time" in stdout
    assert _waves(stdout)[0] == ["GPU 0 (0.5 of it)", "GPU 1 (0.5 of it)"]
    # without --gpus-per-trial each of 4 one-CPU trials gets an equal share of the 2 GPUs
    code, stdout, _ = cli(args + ["--workers", "4"], capsys)
    assert code == 0 and "4 trial(s) at a time on 2 GPU(s), 0.5 GPU per trial" in stdout


def test_cluster_slots_fill_every_node_and_refuse_what_fits_nowhere():
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}, {"CPU": 16.0, "GPU": 1.0}]
    slots = cluster_slots(nodes, 0.5, 1.0)
    assert slots == [Slot(0, 0, 0.5), Slot(0, 1, 0.5), Slot(0, 0, 0.5), Slot(0, 1, 0.5), Slot(2, 0, 0.5),
                     Slot(2, 0, 0.5)]
    assert len(cluster_slots(nodes, 0.0, 4.0)) == 2 + 1 + 4  # CPU-only trials use every node
    assert len(cluster_slots(nodes, 0.3, 1.0)) == 2 * 3 + 3  # three trials of 0.3 fit on a GPU, as Ray packs them
    with pytest.raises(GroupRobustError, match="no node"):
        cluster_slots(nodes, 0.0, 32.0)
    with pytest.raises(GroupRobustError, match="asks for GPUs"):
        cluster_slots([{"CPU": 8.0}], 1.0, 1.0)
    assert local_slots(0) == [Slot(0, None, 0.0)]
    assert local_slots(3, 1.0) == [Slot(0, 0, 1.0), Slot(0, 1, 1.0), Slot(0, 2, 1.0)]


@pytest.mark.slow
def test_local_executor_runs_one_worker_per_gpu_pinned_and_recorded(spec, tmp_path, two_gpus, monkeypatch):
    """Two worker processes (one per fake GPU) run the four trials; each run records the GPU it was
    pinned to, both were used, and the runs equal those of the serial in-process executor."""
    slots = []
    summary = run_sweep(spec, tmp_path / "gpus", on_start=lambda plan, n: slots.append(n))
    assert slots == [2] and summary.finished == 4 and not summary.failed
    pinned = {}
    for run in runs_dir(tmp_path / "gpus").glob("[!.]*"):
        pinned[run.name] = json.loads((run / "config.json").read_text())["environment"]["cuda_visible_devices"]
    assert sorted(set(pinned.values())) == ["0", "1"]
    serial = tmp_path / "serial"
    monkeypatch.setattr(placement, "visible_gpus", lambda: 0)
    assert run_sweep(spec, serial).finished == 4
    for run_id in pinned:
        a, b = (json.loads((runs_dir(d) / run_id / "result.json").read_text()) for d in (tmp_path / "gpus", serial))
        assert a["metrics"] == b["metrics"]
        environment = json.loads((runs_dir(serial) / run_id / "config.json").read_text())["environment"]
        assert environment["device"] == "cpu"
        assert environment["cuda_visible_devices"] == os.environ.get("CUDA_VISIBLE_DEVICES")
