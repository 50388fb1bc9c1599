"""``sweep --best-only --seeds N``: only the point each (dataset, method) chooses, as the report chooses it, runs
on more seeds; the grid's runs are reused, never retrained."""

import json

import pytest
import yaml

from cli_runner import cli
from grouprobust.sweep import load_runs, run_sweep, select_and_aggregate
from grouprobust.sweep.store import MANIFEST, runs_dir

GRID = {"seeds": [0, 1], "set": {"epochs": 3, "model": "linear"},
        "datasets": {"spurious-gaussian": {"n": 300, "n_val": 200, "n_test": 200}},
        "methods": {"groupdro": {"grid": {"lr": [0.0001, 0.05]}}}}


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(GRID))
    return path


def _stamps(out):
    """Each run directory's result.json modification time, by run id."""
    return {p.name: (p / "result.json").stat().st_mtime_ns for p in runs_dir(out).glob("[!.]*")}


def test_best_only_reruns_the_chosen_point_on_more_seeds(spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_sweep(spec, out).finished == 4
    grid = load_runs(out)
    chosen = select_and_aggregate(grid).chosen
    best_point = set(chosen["point"])
    assert len(best_point) == 1 and len(set(grid["point"])) == 2
    before = _stamps(out)

    code, stdout, _ = cli(["sweep", str(spec), "--out", str(out), "--best-only", "--seeds", "4", "--dry-run"], capsys,
                          squash=True)
    assert code == 0
    assert "4 trials: 2 finished, 0 failed (skipped), 2 to run (2 other trials of the grid left alone)" in stdout

    summary = run_sweep(spec, out, best_only=True, seeds=4)
    assert summary.total == 4 and summary.skipped_finished == 2 and summary.finished == 2
    runs = load_runs(out)
    new = runs[~runs["run_id"].isin(before)]
    assert sorted(new["seed"]) == [2, 3] and set(new["point"]) == best_point  # only the chosen point, new seeds
    assert {k: v for k, v in _stamps(out).items() if k in before} == before  # nothing of the grid ran again
    listed = {t["run_id"] for t in json.loads((out / MANIFEST).read_text())["trials"]}
    assert listed == set(runs["run_id"])  # the manifest keeps the grid and adds the new seeds

    report = select_and_aggregate(runs)
    assert report.summary["n_seeds"].tolist() == [4]
    assert run_sweep(spec, out, best_only=True, seeds=4).outcomes == []  # done: nothing more runs


def test_best_only_needs_the_finished_grid_and_enough_seeds(spec, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(["sweep", str(spec), "--out", str(out), "--best-only", "--seeds", "4"], capsys)
    assert code == 2 and "4 of the 4 trials" in err and "--best-only" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, _, err = cli(["sweep", str(spec), "--out", str(out), "--best-only", "--seeds", "1"], capsys)
    assert code == 2 and "fewer than the 2 seeds" in err and not out.exists()
