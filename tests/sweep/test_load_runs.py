"""`grouprobust.load_runs` and `load_history`: the run directories as DataFrames."""

import json

import numpy as np
import pytest

import grouprobust
from grouprobust import load_history, load_runs, resolve_config, run
from grouprobust.errors import GroupRobustError

TINY = {"n": 200, "n_val": 100, "n_test": 100}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed, eta in ((0, 0.01), (1, 0.01), (0, 0.1)):
        config = resolve_config("spurious-gaussian", "groupdro", seed, TINY, {"epochs": 2, "eta": eta})
        run(config, root / f"gdro-{seed}-{eta}")
    return root


def test_load_runs_has_one_row_per_run_with_config_hparams_and_metrics(runs_dir):
    runs = load_runs(runs_dir)
    assert len(runs) == 3 and set(runs["status"]) == {"finished"}
    assert sorted(runs["hparams.eta"]) == [0.01, 0.01, 0.1] and set(runs["data.n"]) == {200}
    for row in runs.itertuples():
        result = json.loads((runs_dir / row.run_id / "result.json").read_text())
        assert row.test_worst_group_acc == pytest.approx(result["metrics"]["test"]["worst_group_acc"])
        assert row.val_avg_acc == pytest.approx(result["metrics"]["val"]["avg_acc"])
        assert row.selected_epoch == result["selected"]["epoch"]
    # the two eta=0.01 runs are one hyper-parameter point over two seeds
    assert runs.groupby("point").size().sort_values().tolist() == [1, 2]
    assert grouprobust.load_runs is load_runs


def test_load_history_has_one_row_per_epoch_matching_history_jsonl(runs_dir):
    path = runs_dir / "gdro-0-0.1"
    lines = [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]
    history = load_history(path)
    assert history["epoch"].tolist() == [entry["epoch"] for entry in lines] == [1, 2]
    np.testing.assert_allclose(history["val_worst_group_acc"],
                               [entry["metrics"]["val"]["worst_group_acc"] for entry in lines])
    assert history["group_weights"].iloc[-1] == lines[-1]["group_weights"]
    first_group = lines[0]["metrics"]["test"]["per_group"]["0"]
    assert history[f"test_group_acc[{first_group['name']}]"].iloc[0] == pytest.approx(first_group["acc"])


def test_load_errors_are_one_line(runs_dir, tmp_path):
    with pytest.raises(GroupRobustError, match="no finished or failed runs"):
        load_runs(tmp_path)
    with pytest.raises(GroupRobustError, match="holds no history.jsonl"):
        load_history(tmp_path)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "history.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, \n')
    with pytest.raises(GroupRobustError, match="line 2 is not valid JSON"):
        load_history(damaged)


def test_load_runs_lists_failed_runs_with_their_reason(runs_dir, tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(runs_dir / "gdro-0-0.1", folder / "ok")
    shutil.copytree(runs_dir / "gdro-1-0.01", folder / "bad")
    (folder / "bad" / "result.json").unlink()
    (folder / "bad" / "error.json").write_text(json.dumps({"status": "failed", "reason": "loss is nan at epoch 2"}))
    runs = load_runs(folder).set_index("run_id")
    assert runs.loc["ok", "status"] == "finished" and runs.loc["bad", "status"] == "failed"
    assert runs.loc["bad", "reason"] == "loss is nan at epoch 2"
    assert np.isnan(runs.loc["bad", "test_worst_group_acc"]) and runs.loc["bad", "hparams.eta"] == 0.01
