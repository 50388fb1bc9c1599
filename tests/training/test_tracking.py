"""Experiment tracking (`grouprobust.tracking`): MLflow and TensorBoard, read back with their own libraries."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grouprobust.cli import main
from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.runs import run
from grouprobust.tracking import make_tracker, parse_track

torch.set_num_threads(1)
SMALL = {"n": 200, "n_val": 80, "n_test": 80}
EPOCHS = 3


def config(method: str = "groupdro", seed: int = 0):
    return resolve_config("spurious-gaussian", method, seed, SMALL, {"epochs": str(EPOCHS), "hidden": "8"})


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def mlflow_runs(store: Path, experiment: str = "grouprobust"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {store}"
    return client, client.search_runs([found.experiment_id])


def test_mlflow_gets_params_each_epoch_the_result_and_the_run_directory(tmp_path):
    cfg = config()
    result = run(cfg, tmp_path / "runs" / "gd", tracker=make_tracker("mlflow", tmp_path / "runs"))
    client, runs = mlflow_runs(tmp_path / "runs" / "mlruns")
    assert len(runs) == 1
    tracked = runs[0]
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["grouprobust.run_id"] == cfg.run_id
    assert tracked.data.params["method"] == "groupdro"
    assert float(tracked.data.params["hparams.eta"]) == cfg.hparams["eta"]
    assert int(tracked.data.params["data.n"]) == 200
    # one value per epoch, equal to history.jsonl's
    entries = history(tmp_path / "runs" / "gd")
    series = sorted(client.get_metric_history(tracked.info.run_id, "val/worst_group_acc"), key=lambda m: m.step)
    assert [m.step for m in series] == [e["epoch"] for e in entries] == list(range(1, EPOCHS + 1))
    assert [m.value for m in series] == pytest.approx([e["metrics"]["val"]["worst_group_acc"] for e in entries])
    loss = sorted(client.get_metric_history(tracked.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.value for m in loss] == pytest.approx([e["train_loss"] for e in entries])
    assert tracked.data.metrics["selected/test/worst_group_acc"] == pytest.approx(
        result["metrics"]["test"]["worst_group_acc"])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"config.json", "history.jsonl", "model.pt", "result.json"} <= artifacts
    # the run directory itself is untouched by tracking: the store lives beside it
    assert sorted(p.name for p in (tmp_path / "runs" / "gd").iterdir()) == [
        "config.json", "history.jsonl", "model.pt", "result.json"]


def test_mlflow_tracking_uri_from_the_environment_wins(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.resolve().as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run(config(), tmp_path / "runs" / "gd", tracker=make_tracker("mlflow", tmp_path / "runs"))
    assert not (tmp_path / "runs" / "mlruns").exists()
    _, runs = mlflow_runs(elsewhere)
    assert len(runs) == 1


def test_tensorboard_event_files_in_the_run_directory(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(config(), tmp_path / "gd", tracker=make_tracker("tensorboard"))
    assert list((tmp_path / "gd").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "gd"))
    acc.Reload()
    entries = history(tmp_path / "gd")
    loss = acc.Scalars("train_loss")
    assert [s.step for s in loss] == list(range(1, EPOCHS + 1))
    assert [s.value for s in loss] == pytest.approx([e["train_loss"] for e in entries], rel=1e-6)
    wga = acc.Scalars("test/worst_group_acc")
    assert [s.value for s in wga] == pytest.approx([e["metrics"]["test"]["worst_group_acc"] for e in entries])


class Recorder:
    def __init__(self, fail_in: str | None = None):
        self.calls: list[str] = []
        self.fail_in = fail_in
        self.finished_files: list[str] = []

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"tracking server down during {name}")

    def start(self, config, directory):
        self._record("start")

    def log(self, entry):
        self._record("log")

    def finish(self, result, directory):
        self.finished_files = sorted(p.name for p in Path(directory).iterdir())
        self._record("finish")

    def fail(self, reason):
        self._record("fail")


def test_a_tracker_sees_every_entry_and_the_files_before_publication(tmp_path):
    recorder = Recorder()
    run(config(), tmp_path / "gd", tracker=recorder)
    assert recorder.calls == ["start"] + ["log"] * EPOCHS + ["finish"]
    assert {"config.json", "history.jsonl", "model.pt"} <= set(recorder.finished_files)
    # a finished run is reused, not tracked again
    again = Recorder()
    assert run(config(), tmp_path / "gd", tracker=again).get("reused") and again.calls == []


def test_a_failing_tracker_is_one_warning_and_the_run_is_kept(tmp_path, caplog):
    recorder = Recorder(fail_in="log")
    with caplog.at_level(logging.WARNING, logger="grouprobust.tracking"):
        result = run(config(), tmp_path / "gd", tracker=recorder)
    assert (tmp_path / "gd" / "result.json").is_file() and result["selected"]["epoch"] >= 1
    assert recorder.calls == ["start", "log"]  # switched off after its first failure
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tracking server down" in warnings[0].getMessage()


def test_an_unreachable_mlflow_server_is_one_warning_and_the_run_is_kept(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with caplog.at_level(logging.WARNING, logger="grouprobust.tracking"):
        run(config(), tmp_path / "gd", tracker=make_tracker("mlflow", tmp_path))
    assert (tmp_path / "gd" / "result.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "experiment tracking failed in start" in warnings[0]


def test_an_interrupted_run_marks_the_tracked_run_failed(tmp_path):
    recorder = Recorder()

    def interrupt(epoch, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(config(), tmp_path / "gd", tracker=recorder, on_epoch=interrupt)
    assert recorder.calls == ["start", "log", "fail"]
    assert not (tmp_path / "gd").exists()


def test_sweep_tracks_every_trial(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: tracked\nseeds: 2\nset: {epochs: 2, hidden: 8}\ntrack: mlflow\n"
                    "datasets: {spurious-gaussian: {n: 200, n_val: 80, n_test: 80}}\nmethods: [erm]\n")
    with pytest.raises(SystemExit) as ex:  # --track adds tensorboard on top of (replaces) the file's key
        main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "-q", "--track", "mlflow,tensorboard"])
    assert ex.value.code in (0, None), capsys.readouterr().err
    _, runs = mlflow_runs(tmp_path / "sw" / "mlruns", "tracked")
    run_dirs = sorted(p for p in (tmp_path / "sw" / "runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == len(run_dirs) == 2
    assert {r.data.tags["grouprobust.run_id"] for r in runs} == {p.name for p in run_dirs}
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    assert all(list(p.glob("events.out.tfevents.*")) for p in run_dirs)


def test_track_names_are_checked():
    assert parse_track("mlflow, tensorboard") == ["mlflow", "tensorboard"] and parse_track(None) == []
    with pytest.raises(GroupRobustError, match="unknown tracker 'wandb'"):
        parse_track("wandb")


def test_bad_track_flag_and_sweep_key_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        main(["train", "--dataset", "spurious-gaussian", "--out", str(tmp_path / "r"), "--track", "wandb"])
    err = " ".join(capsys.readouterr().err.split())
    assert ex.value.code == 2 and "unknown tracker 'wandb'" in err and "--track" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    spec = tmp_path / "s.yaml"
    spec.write_text("track: [mlflow, nope]\ndatasets: [spurious-gaussian]\nmethods: [erm]\n")
    with pytest.raises(SystemExit) as ex:
        main(["sweep", str(spec), "--out", str(tmp_path / "sw")])
    err = " ".join(capsys.readouterr().err.split())
    assert ex.value.code == 2 and "track" in err and "nope" in err and not (tmp_path / "sw").exists()
    spec.write_text("datasets: [spurious-gaussian]\nmethods: [erm]\n")
    with pytest.raises(SystemExit) as ex:
        main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--dry-run", "--track", "wandb"])
    err = " ".join(capsys.readouterr().err.split())
    assert ex.value.code == 2 and "unknown tracker 'wandb'" in err and "--track" in err


def test_a_missing_tracking_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(GroupRobustError, match=r"pip install 'grouprobust\[mlflow\]'"):
        make_tracker("mlflow")


@pytest.mark.slow
def test_no_tracking_library_is_imported_when_tracking_is_off(tmp_path):
    code = (
        "import sys\n"
        "from grouprobust.cli import main\n"
        f"try:\n    main(['train', '--dataset', 'spurious-gaussian', '--data', 'n=100', '--epochs', '1', '-q', "
        f"'--out', {str(tmp_path / 'r')!r}])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard', 'tensorboardX')"
        " or m == 'torch.utils.tensorboard']\n"
        "print('LOADED', loaded)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": src})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout
    assert (tmp_path / "r" / "result.json").is_file()


def test_a_diverging_run_is_failed_in_mlflow_and_written_with_error_json(tmp_path):
    from grouprobust.errors import DivergedError

    cfg = resolve_config("spurious-gaussian", "erm", 0, SMALL, {"epochs": "3", "lr": "1e30", "optimizer": "sgd"})
    with pytest.raises(DivergedError):
        run(cfg, tmp_path / "runs" / "bad", tracker=make_tracker("mlflow", tmp_path / "runs"))
    assert (tmp_path / "runs" / "bad" / "error.json").is_file()
    _, runs = mlflow_runs(tmp_path / "runs" / "mlruns")
    assert [r.info.status for r in runs] == ["FAILED"] and runs[0].data.tags["grouprobust.failure"]
