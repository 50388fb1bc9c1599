"""Reports on hand-made run directories: selection by the seed-averaged validation metric, mean ± std, failures."""

import json
import statistics

import pandas as pd
import pytest

from grouprobust.cli import main
from grouprobust.errors import GroupRobustError
from grouprobust.sweep import collect_runs, write_report

GROUPS = ["y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"]


def metrics(wg, avg, per_group=None):
    per_group = per_group or [avg] * 4
    return {"worst_group_acc": wg, "group_balanced_acc": sum(per_group) / 4, "avg_acc": avg,
            "per_group": {str(i): {"name": GROUPS[i], "acc": a, "n": 25} for i, a in enumerate(per_group)}}


def make_run(runs, run_id, method, seed, lr, val_wg, test_wg, test_avg, weights=None, failed=None):
    path = runs / run_id
    path.mkdir(parents=True)
    config = {"dataset": "spurious-gaussian", "method": method, "seed": seed, "data": {"n": 100},
              "hparams": {"lr": lr, "epochs": 2}, "regime": "full", "select": "val_worst_group_acc", "run_id": run_id}
    (path / "config.json").write_text(json.dumps(config))
    if failed:
        (path / "error.json").write_text(json.dumps({"status": "failed", "reason": failed}))
        return
    per_group = [test_wg, test_avg, test_avg, 1.0]
    result = {"dataset": "spurious-gaussian", "method": method, "seed": seed,
              "selected": {"rule": "val_worst_group_acc", "epoch": 2},
              "metrics": {"val": metrics(val_wg, 0.8), "test": metrics(test_wg, test_avg, per_group)}}
    (path / "result.json").write_text(json.dumps(result))
    history = [{"epoch": e, "train_loss": 1.0} | ({"group_weights": [w * e for w in weights]} if weights else {})
               for e in (1, 2)]
    (path / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


# erm, lr=0.1: val wg 0.5/0.6/0.7 (mean 0.600); lr=0.01: 0.9/0.4/0.4 (mean 0.567, but the best single run).
ERM = {0.1: ([0.5, 0.6, 0.7], [0.40, 0.50, 0.65], [0.80, 0.82, 0.84]),
       0.01: ([0.9, 0.4, 0.4], [0.90, 0.10, 0.10], [0.90, 0.90, 0.90])}
DRO = {0.1: ([0.7, 0.7], [0.70, 0.74], [0.75, 0.77])}


@pytest.fixture
def sweep_dir(tmp_path):
    runs = tmp_path / "runs"
    for lr, (val, test, avg) in ERM.items():
        for seed in range(3):
            make_run(runs, f"erm-{lr}-{seed}", "erm", seed, lr, val[seed], test[seed], avg[seed])
    for lr, (val, test, avg) in DRO.items():
        for seed in range(2):
            make_run(runs, f"dro-{lr}-{seed}", "groupdro", seed, lr, val[seed], test[seed], avg[seed],
                     weights=[0.1, 0.2, 0.3, 0.4])
    make_run(runs, "dro-bad-0", "groupdro", 0, 10.0, 0, 0, 0, failed="train: loss became nan at epoch 1 step 3")
    half = runs / ".erm-half.tmp-999999-abcd"  # a killed run: never counted
    half.mkdir()
    (half / "config.json").write_text("{}")
    return tmp_path


def test_selection_averages_val_over_seeds_and_reports_mean_std(sweep_dir):
    report, folder = write_report(sweep_dir)
    s = report.summary.set_index("method")
    assert set(s.index) == {"erm", "groupdro"}
    erm = s.loc["erm"]
    assert erm["hparams"] == "lr=0.1"  # mean val 0.600 beats 0.567 (a per-run max would pick lr=0.01)
    assert erm["n_seeds"] == 3 and erm["n_points"] == 2
    assert erm["val_worst_group_acc_mean"] == pytest.approx(0.6)
    assert erm["test_worst_group_acc_mean"] == pytest.approx(statistics.mean([0.40, 0.50, 0.65]))
    assert erm["test_worst_group_acc_std"] == pytest.approx(statistics.stdev([0.40, 0.50, 0.65]))
    assert erm["test_worst_group_acc_std"] == pytest.approx(0.125831, abs=1e-6)  # by hand, ddof=1
    assert erm["test_avg_acc_mean"] == pytest.approx(0.82) and erm["test_avg_acc_std"] == pytest.approx(0.02)
    dro = s.loc["groupdro"]
    assert dro["n_seeds"] == 2  # the failed run is not averaged in
    assert dro["test_worst_group_acc_mean"] == pytest.approx(0.72)
    assert dro["test_worst_group_acc_std"] == pytest.approx(statistics.stdev([0.70, 0.74]))

    csv = pd.read_csv(folder / "summary.csv").set_index("method")
    assert csv.loc["erm", "test_worst_group_acc_mean"] == pytest.approx(0.516667, abs=1e-6)
    md = (folder / "report.md").read_text()
    assert "51.7 ± 12.6" in md and "72.0 ± 2.8" in md and "mean over seeds" in md
    tex = (folder / "summary.tex").read_text()
    assert r"51.7 $\pm$ 12.6" in tex and r"worst-group \%" in tex and r"val\_worst\_group\_acc" in tex
    per_group = pd.read_csv(folder / "per_group.csv")
    row = per_group[(per_group["method"] == "erm") & (per_group["group"] == "y=0,a=0")]
    assert row["test_acc_mean"].item() == pytest.approx(statistics.mean([0.40, 0.50, 0.65]))
    for figure in ("method_comparison.png", "per_group_spurious-gaussian.png",
                   "group_weights_spurious-gaussian_groupdro.png"):
        assert (folder / figure).stat().st_size > 1000
    assert not (folder / "group_weights_spurious-gaussian_erm.png").exists()  # ERM logs no weights


def test_failures_surface_and_half_written_runs_do_not_count(sweep_dir, capsys):
    runs = collect_runs(sweep_dir)
    assert len(runs) == 6 + 2 + 1 and "erm-half" not in " ".join(runs["run_id"])
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(sweep_dir), "--no-plots"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "1 failed runs" in out and "dro-bad-0" in out and "loss became nan" in out
    failures = pd.read_csv(sweep_dir / "report" / "failures.csv")
    assert failures["run_id"].tolist() == ["dro-bad-0"] and "nan" in failures["reason"].item()
    assert "## Failed runs" in (sweep_dir / "report" / "report.md").read_text()


def test_report_on_empty_or_missing_directory_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(GroupRobustError, match="no finished or failed runs"):
        collect_runs(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _report_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_report_keeps_a_users_files_and_replaces_only_its_own(sweep_dir, tmp_path, capsys):
    mine = tmp_path / "myrep"
    mine.mkdir()
    (mine / "summary.csv").write_text("mine")
    (mine / "report.md").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(sweep_dir), "--out", str(mine), "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "already exists and no earlier report wrote it" in err and "remove that file" in err
    assert err.endswith("(set it with --out)") and ("summary.csv" in err or "report.md" in err)
    assert _report_files(mine) == {"summary.csv": b"mine", "report.md": b"mine"}  # nothing written

    own = sweep_dir / "report"  # the default folder, with a hand-made report.md
    own.mkdir()
    (own / "report.md").write_text("my notes")
    with pytest.raises(GroupRobustError, match="report.md already exists"):
        write_report(sweep_dir)
    assert _report_files(own) == {"report.md": b"my notes"}

    (own / "report.md").unlink()  # removed: the report is written, and re-running it regenerates it
    report, folder = write_report(sweep_dir)
    listing = json.loads((folder / "report.json").read_text())
    assert set(listing["files"]) == set(_report_files(folder)) - {"report.json"}
    assert {"report.md", "summary.csv", "method_comparison.png"} <= set(listing["files"])
    (folder / "summary.csv").write_text("stale")
    (folder / "notes.txt").write_text("mine")  # a file the report does not write: kept as it is
    write_report(sweep_dir, plots=False)
    assert (folder / "summary.csv").read_text().startswith("dataset,") and (folder / "notes.txt").read_text() == "mine"
    assert "method_comparison.png" in json.loads((folder / "report.json").read_text())["files"]  # still its own
    write_report(sweep_dir)  # and its figures are replaced again


@pytest.mark.parametrize("listing", ["mine", "{}", '{"files": ["summary.csv"]}'])
def test_a_report_json_that_no_report_wrote_is_kept(sweep_dir, tmp_path, listing):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.json").write_text(listing)
    (out / "summary.csv").write_text("mine")
    with pytest.raises(GroupRobustError, match="report.json already exists and is not a report's list") as info:
        write_report(sweep_dir, out, plots=False)
    assert info.value.subject == "out"
    assert _report_files(out) == {"report.json": listing.encode(), "summary.csv": b"mine"}


def test_a_users_figure_of_the_same_name_is_kept(sweep_dir, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "method_comparison.png").write_bytes(b"mine")
    with pytest.raises(GroupRobustError, match="method_comparison.png already exists"):
        write_report(sweep_dir, out)
    assert _report_files(out) == {"method_comparison.png": b"mine"}
    write_report(sweep_dir, out, plots=False)  # no figures asked for: nothing of the user's is in the way
    assert (out / "method_comparison.png").read_bytes() == b"mine"
    with pytest.raises(GroupRobustError, match="method_comparison.png already exists"):
        write_report(sweep_dir, out)  # the earlier report did not write the figure: still refused


def test_a_report_written_before_the_file_list_existed_is_still_replaced(sweep_dir):
    report, folder = write_report(sweep_dir)
    (folder / "report.json").unlink()  # what a report written by an older grouprobust leaves: no list
    (folder / "summary.csv").write_text("stale")
    write_report(sweep_dir)  # recognised by its report.md's first line, so re-running keeps working
    assert (folder / "summary.csv").read_text().startswith("dataset,")
    assert "summary.csv" in json.loads((folder / "report.json").read_text())["files"]
