"""A method's ``expected`` in a sweep file: checked up front, carried into sweep.json without touching
run ids, and shown by the report beside the measured worst-group accuracy."""

import json

import pandas as pd
import pytest
import yaml

from grouprobust.errors import GroupRobustError
from grouprobust.sweep import expand, load_sweep
from grouprobust.sweep.report import write_report
from grouprobust.sweep.runner import run_sweep

from cli_runner import cli

TINY = {"n": 200, "n_val": 100, "n_test": 100}
CITED = {"worst_group_acc": 0.726, "source": "Liu et al. 2021, Table 1 (ResNet-50) & 5% of_it"}


def write(tmp_path, methods, datasets=None, name="sweep.yaml"):
    data = {"seeds": [0, 1], "set": {"epochs": 1}, "datasets": datasets or {"spurious-gaussian": TINY},
            "methods": methods}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("expected, key, words", [
    ({"worst_group_acc": 91.4, "source": "x"}, "methods.erm.expected.worst_group_acc", "91.4% is 0.914"),
    ({"worst_group_acc": True, "source": "x"}, "methods.erm.expected.worst_group_acc", "fraction"),
    ({"worst_group_acc": float("nan"), "source": "x"}, "methods.erm.expected.worst_group_acc", "fraction"),
    ({"worst_group_acc": 0.9, "source": "  "}, "methods.erm.expected.source", "non-empty string"),
    ({"worst_group_acc": 0.9, "source": 3}, "methods.erm.expected.source", "non-empty string"),
    ({"worst_group_acc": 0.9}, "methods.erm.expected.source", "missing"),
    ({"worst_group_acc": 0.9, "source": "x", "avg": 0.9}, "methods.erm.expected.avg", "unknown key"),
    ({"waterbirds": CITED}, "methods.erm.expected.waterbirds", "nor a dataset of this sweep (spurious-gaussian)"),
    ({"spurious-gaussian": {"worst_group_acc": 2, "source": "x"}}, "methods.erm.expected.spurious-gaussian.worst_group_acc",
     "fraction"),
    ([0.9, "x"], "methods.erm.expected", "must be a mapping"),
])
def test_bad_expected_is_one_line_naming_file_and_key(tmp_path, capsys, expected, key, words):
    path = write(tmp_path, {"erm": {"expected": expected}})
    with pytest.raises(GroupRobustError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and words in message and "\n" not in message
    code, _, stderr = cli(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert code == 2 and key in stderr
    assert not (tmp_path / "out").exists()


def test_expected_goes_to_each_trial_per_dataset_and_never_into_run_ids(tmp_path):
    datasets = {"spurious-gaussian": TINY, "colored-digits": {"conflict": 0.05}}
    per_dataset = {"colored-digits": {"worst_group_acc": 0.5, "source": "B"}}
    with_expected = expand(load_sweep(write(tmp_path, {"erm": {"expected": CITED}, "groupdro": {"expected": per_dataset}},
                                            datasets)))
    without = expand(load_sweep(write(tmp_path, {"erm": {}, "groupdro": {}}, datasets, "plain.yaml")))
    assert [t.run_id for t in with_expected] == [t.run_id for t in without]
    found = {(t.config.dataset, t.config.method): t.expected for t in with_expected}
    assert found[("spurious-gaussian", "erm")].worst_group_acc == 0.726
    assert found[("colored-digits", "erm")].source == CITED["source"]  # one value for every dataset
    assert found[("colored-digits", "groupdro")].worst_group_acc == 0.5
    assert found[("spurious-gaussian", "groupdro")] is None  # given for another dataset only
    assert all(t.expected is None for t in without)


def test_report_shows_expected_beside_measured_in_markdown_csv_and_latex(tmp_path):
    path = write(tmp_path, {"erm": {"expected": CITED},
                            "groupdro": {"expected": {"worst_group_acc": 0.914, "source": "Sagawa et al. 2020"}},
                            "iw": {}})
    out = tmp_path / "out"
    run_sweep(path, out)
    manifest = json.loads((out / "sweep.json").read_text())
    assert {e["method"]: e.get("expected") for e in manifest["trials"]} == {
        "erm": CITED, "groupdro": {"worst_group_acc": 0.914, "source": "Sagawa et al. 2020"}, "iw": None}
    report, folder = write_report(out, plots=False)
    summary = pd.read_csv(folder / "summary.csv").set_index("method")
    assert summary.loc["erm", "expected_worst_group_acc"] == 0.726
    assert summary.loc["groupdro", "expected_source"] == "Sagawa et al. 2020"
    assert pd.isna(summary.loc["iw", "expected_worst_group_acc"])
    assert summary.loc["erm", "test_worst_group_acc_mean"] == pytest.approx(
        report.runs[report.runs.method == "erm"]["test_worst_group_acc"].mean())  # measured stays measured
    markdown = (folder / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| dataset"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells.index("expected worst-group %") == cells.index("worst-group %") + 1
    erm_row = next(line for line in markdown.splitlines() if "| erm " in line)
    assert "72.6 [1]" in erm_row
    assert "[1] Liu et al. 2021, Table 1 (ResNet-50) & 5% of_it" in markdown
    assert "[2] Sagawa et al. 2020" in markdown
    latex = (folder / "summary.tex").read_text()
    assert "expected worst-group \\%" in latex and "91.4 [2]" in latex
    assert "[1] Liu et al. 2021, Table 1 (ResNet-50) \\& 5\\% of\\_it" in latex


def test_report_of_a_sweep_without_published_results_has_no_such_column(tmp_path):
    out = tmp_path / "out"
    run_sweep(write(tmp_path, {"erm": {}}), out)
    _, folder = write_report(out, plots=False)
    assert "expected" not in (folder / "summary.csv").read_text()
    assert "expected worst-group" not in (folder / "report.md").read_text()
    assert "Expected worst-group" not in (folder / "report.md").read_text()


def test_correcting_a_citation_reruns_nothing_and_the_report_follows(tmp_path):
    out = tmp_path / "out"
    run_sweep(write(tmp_path, {"erm": {"expected": CITED}}), out)
    corrected = {"worst_group_acc": 0.7, "source": "corrected"}
    summary = run_sweep(write(tmp_path, {"erm": {"expected": corrected}}), out)
    assert summary.ran == 0 and summary.skipped_finished == 2
    report, _ = write_report(out, plots=False)
    assert report.summary.loc[0, "expected_worst_group_acc"] == 0.7
    assert report.summary.loc[0, "expected_source"] == "corrected"
