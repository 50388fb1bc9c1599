"""The report answers what a reader asks: best first by the selection figure, one "best method" line, every
seed's value, the labels each method read, wall time and the worst-group interval."""

import pandas as pd
import pytest

from cli_runner import cli
from grouprobust import resolve_config, run
from grouprobust.sweep.report import write_report

TINY = {"n": 300, "n_val": 200, "n_test": 200}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("answers")
    for method, regime in (("erm", "full"), ("groupdro", "full"), ("jtt", "val")):
        for seed in (0, 1):
            hp = {"epochs": 2, **({"stage1_epochs": 1} if method == "jtt" else {})}
            run(resolve_config("spurious-gaussian", method, seed, TINY, hp, regime), out=root / f"{method}-{seed}")
    return root


def test_summary_is_ordered_by_the_selection_figure_with_seeds_labels_time_and_interval(runs_dir, tmp_path):
    report, out = write_report(runs_dir, tmp_path / "rep", plots=False)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["selection_figure"]) == sorted(summary["selection_figure"], reverse=True)
    assert dict(zip(summary["method"], summary["labels"])) == {"erm": "val only", "groupdro": "train + val",
                                                               "jtt": "val only"}
    erm = report.chosen[report.chosen["method"] == "erm"].sort_values("seed")
    per_seed = [float(v) for v in summary.set_index("method").loc["erm", "test_worst_group_acc_per_seed"].split(";")]
    assert per_seed == pytest.approx(list(erm["test_worst_group_acc"]), abs=1e-4)
    assert (summary["time_s_mean"] > 0).all() and (summary["test_worst_group_acc_ci95_half_mean"] > 0).all()
    text = (out / "report.md").read_text()
    best = summary.iloc[0]["method"]
    assert f"best method on spurious-gaussian by val_worst_group_acc: {best}" in text


def test_report_per_seed_flag_adds_each_seed_to_the_table(runs_dir, tmp_path, capsys):
    code, out, err = cli(["report", str(runs_dir), "--out", str(tmp_path / "r"), "--no-plots", "--per-seed"], capsys)
    assert code == 0, err
    assert "worst-group per seed %" in out and "best method on spurious-gaussian" in out and "time s" in out
