"""The two-stage last-layer protocol: held-out split, validation halves, and `grouprobust train --method gsr|dfr`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grouprobust.cli import main
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.two_stage import ValHalves, holdout_split

DATA = ["--data", "n=2000", "--data", "n_val=400", "--data", "n_test=400"]


def test_holdout_split_is_seeded_disjoint_and_complete():
    rest, held = holdout_split(500, 0.1, seed=1)
    assert len(held) == 50 and len(rest) == 450
    assert np.array_equal(np.sort(np.concatenate([rest, held])), np.arange(500))
    assert np.array_equal(held, holdout_split(500, 0.1, seed=1)[1])
    assert not np.array_equal(held, holdout_split(500, 0.1, seed=2)[1])
    with pytest.raises(GroupRobustError, match="holdout_frac"):
        holdout_split(500, 1.0, seed=1)


def test_val_halves_are_disjoint_stratified_and_handed_out_once():
    val = load_dataset("spurious-gaussian", 0, n=100, n_val=301, n_test=10).val
    halves = ValHalves(val, seed=3)
    target, validation = halves.take("target"), halves.take("validation")
    t, v = halves.index["target"], halves.index["validation"]
    assert not set(t) & set(v) and len(t) + len(v) == len(val)
    assert abs(len(t) - len(v)) <= 4  # stratified: each group split evenly (off by at most one per group)
    assert np.all(np.abs(target.group_counts() - validation.group_counts()) <= 1)
    np.testing.assert_array_equal(target.x, val.x[t])
    assert target.split == "target" and validation.split == "validation"
    with pytest.raises(GroupRobustError, match="already handed out"):
        halves.take("target")
    with pytest.raises(GroupRobustError, match="already handed out"):
        halves.take("validation")
    with pytest.raises(GroupRobustError, match="unknown validation half"):
        ValHalves(val, seed=3).take("test")
    assert not np.array_equal(ValHalves(val, seed=4).index["target"], t)
    with pytest.raises(GroupRobustError, match="no group labels"):
        ValHalves(val.without_groups(), seed=0)


def _cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def gsr_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    mp = pytest.MonkeyPatch()
    mp.setenv("GROUPROBUST_CACHE", str(root / "cache"))
    out = root / "gsr"
    code = _cli("train", "--method", "gsr", "--dataset", "spurious-gaussian", "--out", str(out), "--epochs", "8",
                "--set", "n_steps=40", "--set", "hidden=32", "-q", *DATA)
    assert code == 0
    yield out
    mp.undo()


def test_gsr_writes_a_valid_run_directory(gsr_run):
    config = json.loads((gsr_run / "config.json").read_text())
    result = json.loads((gsr_run / "result.json").read_text())
    history = [json.loads(line) for line in (gsr_run / "history.jsonl").read_text().splitlines()]
    assert config["method"] == "gsr" and config["run_id"] == result["run_id"]
    assert [h["step"] for h in history] == list(range(41))
    assert result["method_info"]["n_steps_run"] == 40 and result["selected"]["epoch"] == result["selected"]["step"]
    best = max(h["val_worst_group_acc"] for h in history)
    assert history[result["selected"]["step"]]["val_worst_group_acc"] == best
    assert result["metrics"]["val"]["worst_group_acc"] == pytest.approx(best)  # val = the selection half
    for split in ("val", "test", "target"):
        m = result["metrics"][split]
        assert 0 <= m["worst_group_acc"] <= m["avg_acc"] <= 1 and set(m["per_group"]) == {"0", "1", "2", "3"}
    assert result["val_halves"]["target_n"] + result["val_halves"]["validation_n"] == 400
    # stage 1 never trained on the held-out samples; the reported samples are held-out ones, sorted by weight
    holdout = json.loads((gsr_run / "stage1" / "holdout.json").read_text())
    held = set(holdout["heldout"])
    assert len(held) == 200 and result["n_heldout"] == 200 and not result["stage1"]["heldout_seen_by_stage1"]
    largest, smallest = result["weights"]["largest"], result["weights"]["smallest"]
    assert {r["index"] for r in largest + smallest} <= held
    assert [r["weight"] for r in largest] == sorted((r["weight"] for r in largest), reverse=True)
    assert largest[0]["weight"] > smallest[0]["weight"]
    train = load_dataset("spurious-gaussian", 0, n=2000, n_val=400, n_test=400).train
    assert all(train.y[r["index"]] == r["label"] and train.g[r["index"]] == r["group"] for r in largest)
    with np.load(gsr_run / "weights.npz") as z:
        assert z["trajectory"].shape[1] == 200 and z["steps"][0] == 0
        np.testing.assert_allclose(z["trajectory"].sum(axis=1), 1.0)
        assert sorted(z["heldout_index"].tolist()) == sorted(held)
        position = {int(i): k for k, i in enumerate(z["heldout_index"])}
        assert all(z["final"][position[r["index"]]] == pytest.approx(r["weight"]) for r in largest + smallest)
        assert z["final"].max() == pytest.approx(largest[0]["weight"])


def test_gsr_improves_worst_group_over_uniform_weights_and_upweights_minorities(gsr_run):
    history = [json.loads(line) for line in (gsr_run / "history.jsonl").read_text().splitlines()]
    result = json.loads((gsr_run / "result.json").read_text())
    assert result["metrics"]["val"]["worst_group_acc"] > history[0]["val_worst_group_acc"] + 0.15
    assert max(h["target_worst_group_acc"] for h in history) > history[0]["target_worst_group_acc"] + 0.15
    assert result["metrics"]["test"]["worst_group_acc"] > result["stage1"]["metrics"]["test"]["worst_group_acc"] + 0.15
    # minority groups (a != y: groups 1 and 2) gain weight mass over the uniform start
    first, last = history[0]["weight_mass_per_group"], history[-1]["weight_mass_per_group"]
    assert last[1] + last[2] > first[1] + first[2]


def test_from_reuses_stage1_and_reproduces_stage2(gsr_run, tmp_path):
    out = tmp_path / "again"
    assert _cli("train", "--method", "gsr", "--dataset", "spurious-gaussian", "--out", str(out), "--from", str(gsr_run),
                "--set", "n_steps=40", "-q", *DATA) == 0
    assert not (out / "stage1").exists()
    first = json.loads((gsr_run / "result.json").read_text())
    again = json.loads((out / "result.json").read_text())
    assert again["stage1"]["run_dir"] == str((gsr_run / "stage1").resolve())
    assert again["metrics"]["test"] == first["metrics"]["test"]
    assert again["features"]["cache_key"] == first["features"]["cache_key"]


def test_dfr_round_trip_beats_stage1_erm(gsr_run, tmp_path):
    out = tmp_path / "dfr"
    assert _cli("train", "--method", "dfr", "--dataset", "spurious-gaussian", "--out", str(out),
                "--from", str(gsr_run / "stage1"), "-q", *DATA) == 0
    result = json.loads((out / "result.json").read_text())
    scores = result["method_info"]["cv_scores"]
    assert result["method"] == "dfr" and scores[str(result["selected"]["C"])] == max(scores.values())
    assert "weights" not in result
    erm = result["stage1"]["metrics"]["test"]["worst_group_acc"]
    assert result["metrics"]["test"]["worst_group_acc"] > erm


@pytest.mark.parametrize("args, message", [
    (["--from", "{tmp}/missing"], "no such directory"),
    (["--from", "{tmp}/afile"], "a file, not a run directory"),
    (["--from", "{tmp}"], "no model.pt"),
    (["--set", "bogus=1"], "unknown hyper-parameter 'bogus'"),
    (["--regime", "none"], "needs group labels on validation only"),
    (["--select", "val_avg_acc"], "selects by val_worst_group_acc"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in args]
    (tmp_path / "afile").write_text("not a run")
    assert _cli("train", "--method", "gsr", "--dataset", "spurious-gaussian", "--out", str(out), "-q", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_from_with_a_loop_method_is_refused(gsr_run, tmp_path, capsys):
    assert _cli("train", "--method", "erm", "--dataset", "spurious-gaussian", "--out", str(tmp_path / "o"),
                "--from", str(gsr_run), "-q") == 2
    assert "works only with a last-layer method" in capsys.readouterr().err
