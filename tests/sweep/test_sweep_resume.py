"""Resuming sweeps: SIGKILL of a real sweep process, failed trials and --retry-failed."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from grouprobust.cli import main
from grouprobust.sweep import prepare, run_sweep, write_report
from grouprobust.sweep.store import runs_dir

TINY = {"n": 300, "n_val": 100, "n_test": 100}


def sweep_file(tmp_path, methods, seeds=(0, 1), epochs=3):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"seeds": list(seeds), "set": {"epochs": epochs, "model": "linear"},
                                    "datasets": {"spurious-gaussian": TINY}, "methods": methods}))
    return path


def visible(out):
    return sorted(p.name for p in runs_dir(out).iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(tmp_path):
    path = sweep_file(tmp_path, {"erm": {"grid": {"lr": [0.001, 0.1]}}}, seeds=(0, 1))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "grouprobust", "sweep", str(path), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill while a run is being written (hidden temp dir present) after at least one run finished.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        root = runs_dir(out)
        if root.is_dir():
            names = [p.name for p in root.iterdir()]
            if any(n.startswith(".") and ".tmp-" in n for n in names) and any(not n.startswith(".") for n in names):
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed mid-way"
    half = [p for p in runs_dir(out).iterdir() if p.name.startswith(".") and p.is_dir()]
    assert half, "expected a half-written run left by the kill"
    before = {name: (runs_dir(out) / name / "result.json").read_bytes() for name in visible(out)}
    assert 1 <= len(before) < 4

    _, todo = prepare(path, out)
    assert len(todo.finished) == len(before)  # the half-written run does not count
    assert len(todo.to_run) == 4 - len(before)

    summary = run_sweep(path, out)
    assert summary.skipped_finished == len(before) and summary.finished == 4 - len(before)
    names = visible(out)
    # Only the runs' (empty, hidden) lock files stay next to them; no half-written directory is left.
    assert len(names) == 4 and not [p for p in runs_dir(out).iterdir() if p.name.startswith(".") and p.is_dir()]
    for name in names:
        run = runs_dir(out) / name
        assert json.loads((run / "config.json").read_text())["run_id"] == name
        assert len((run / "history.jsonl").read_text().splitlines()) == 3  # no duplicated epochs
    for name, content in before.items():  # finished runs were not trained again
        assert (runs_dir(out) / name / "result.json").read_bytes() == content
    assert run_sweep(path, out).outcomes == []


def test_diverging_trial_fails_with_reason_sweep_goes_on_and_retry_failed(tmp_path, capsys):
    methods = {"erm": {"set": {"optimizer": "sgd", "momentum": 0.0, "model": "mlp"}, "grid": {"lr": [0.05, 1.0e30]}}}
    path = sweep_file(tmp_path, methods, seeds=(0,), epochs=2)
    out = tmp_path / "out"
    first = run_sweep(path, out)
    assert sorted(o["status"] for o in first.outcomes) == ["failed", "finished"]
    failed = first.failed[0]
    assert "nan" in failed["reason"] or "inf" in failed["reason"]
    error = json.loads((runs_dir(out) / failed["run_id"] / "error.json").read_text())
    assert error["reason"] == failed["reason"]

    again = run_sweep(path, out)
    assert again.outcomes == [] and again.skipped_failed == 1 and again.skipped_finished == 1

    stamp = (runs_dir(out) / failed["run_id"] / "error.json").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(path), "--out", str(out), "--retry-failed", "-q"])
    assert exit_info.value.code == 1  # a sweep with failed trials exits 1 (docs/sweeps.md)
    text = capsys.readouterr().out
    assert "1 already finished" in text and "ran 1: 0 finished, 1 failed" in text
    assert (runs_dir(out) / failed["run_id"] / "error.json").stat().st_mtime_ns != stamp

    report, folder = write_report(out, plots=False)
    assert list(report.failures["run_id"]) == [failed["run_id"]]
    assert report.summary["n_seeds"].tolist() == [1]  # only the finished run enters the table
    md = (folder / "report.md").read_text()
    assert "Failed runs" in md and failed["run_id"] in md and "lower the learning rate" in md


def test_error_found_only_at_run_time_is_recorded_as_failed(tmp_path):
    # cnn needs image inputs: resolve_config accepts it, the model builder refuses it when the trial runs.
    path = sweep_file(tmp_path, {"erm": {"grid": {"model": ["cnn"]}}}, seeds=(0,), epochs=1)
    path.write_text(path.read_text().replace("model: linear", "batch_size: 64"))
    summary = run_sweep(path, tmp_path / "out")
    assert [o["status"] for o in summary.outcomes] == ["failed"]
    assert "needs image inputs" in summary.outcomes[0]["reason"]
    assert (runs_dir(tmp_path / "out") / summary.outcomes[0]["run_id"] / "error.json").is_file()


def test_a_rule_reading_labels_the_dataset_lacks_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0, 1], "select": "val_wilds_worst_group_acc",
                                    "set": {"epochs": 1, "model": "linear"},
                                    "datasets": {"spurious-gaussian": TINY}, "methods": {"erm": {}}}))
    out = tmp_path / "out"
    with pytest.raises(Exception, match="val_wilds_worst_group_acc.*does not carry") as err:
        run_sweep(path, out)
    assert str(path) in str(err.value) and not out.exists()  # refused up front: no trial failed, nothing written
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), "--out", str(out), "-q"])
    assert exit_.value.code == 2 and not out.exists()
    err_text = capsys.readouterr().err
    assert "does not carry" in err_text and len(err_text.strip().splitlines()) == 1
