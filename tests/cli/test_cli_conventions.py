"""CLI conventions: --version, completion, tables whole when piped, progress of analyses, last-layer summaries."""

import pytest
from rich.console import Console

import grouprobust
from grouprobust.analysis.runs import run_implicit_bias_experiment
from grouprobust.cli.render import per_group_table, selected_text
from cli_runner import cli


def test_version_and_shell_completion(capsys):
    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"grouprobust {grouprobust.__version__}"
    code, out, _ = cli(["--show-completion", "bash"], capsys)
    assert code == 0 and "complete" in out and "_GROUPROBUST_COMPLETE=complete_bash" in out


def test_tables_are_not_cut_when_the_output_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = cli(["selection-rules"], capsys)
    assert code == 0 and "…" not in out
    from grouprobust.selection import list_rules

    longest = max((r["description"] for r in list_rules()), key=len)
    assert longest in out  # one line, not folded at 80 columns
    assert max(len(line) for line in out.splitlines()) > 80


def test_implicit_bias_reports_per_step_progress(tmp_path):
    calls = []
    run_implicit_bias_experiment(tmp_path / "ib", losses=["ce"], l2=[0.0, 0.1], steps=300,
                                 progress=lambda message, done, total: calls.append((message, done, total)))
    totals = {total for _, _, total in calls}
    done = [d for _, d, _ in calls]
    assert totals == {600} and done == sorted(done) and done[-1] == 600
    assert len(calls) > 50  # many updates per run, not one line per setting
    assert {m for m, _, _ in calls} == {"seed 0: loss ce, l2 0.0", "seed 0: loss ce, l2 0.1"}


def test_analyze_command_runs_with_its_progress_bar(tmp_path, capsys):
    code, out, err = cli(["analyze", "implicit-bias", "-o", str(tmp_path / "ib"), "--losses", "ce", "--l2", "0",
                          "--steps", "50"], capsys)
    assert code == 0, err
    assert "rel_dist" in out and (tmp_path / "ib" / "report.md").is_file()


def _result(selected, **extra):
    groups = {"0": {"name": "y=0,a=0", "acc": 0.9, "n": 10}, "1": {"name": "y=0,a=1", "acc": 0.5, "n": 4}}
    target = {"per_group": {"0": {"name": "y=0,a=0", "acc": 0.9, "n": 7}, "1": {"name": "y=0,a=1", "acc": 0.5, "n": 3}}}
    return {"dataset": "d", "method": "m", "seed": 0, "selected": selected, "train_group_counts": [80, 2],
            "metrics": {"val": {"per_group": groups}, "test": {"per_group": groups}, "target": target}, **extra}


def _text(table):
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_last_layer_summaries_name_what_was_selected_and_what_the_head_was_fitted_on():
    dfr = _result({"rule": "val_worst_group_acc", "epoch": None, "C": 0.3}, n_heldout=82,
                  method_info={"fit_on": "target"}, val_halves={"target_n": 10, "validation_n": 14})
    text = _text(per_group_table(dfr))
    assert "selected C 0.3 by val_worst_group_acc" in text and "None" not in text
    assert "fit n (target)" in text and "train n" not in text
    row = next(line for line in text.splitlines() if "y=0,a=1" in line)
    assert [c.strip() for c in row.split("│")][2] == "3"  # the target half's count, not the held-out 2
    gsr = _result({"rule": "val_worst_group_acc", "epoch": 12, "step": 12}, n_heldout=82,
                  method_info={"fit_on": "heldout"}, val_halves={})
    text = _text(per_group_table(gsr))
    assert "selected step 12 by" in text and "fit n (held-out)" in text
    assert selected_text({"rule": "r", "epoch": 3}) == "selected epoch 3 by r"
    assert "train n" in _text(per_group_table(_result({"rule": "r", "epoch": 3})))


@pytest.mark.parametrize("words, expected", [("grouprobust train --dataset ta", "table"),
                                             ("grouprobust train --method group", "groupdro")])
def test_shell_completion_completes_dataset_and_method_names(words, expected, capsys, monkeypatch):
    monkeypatch.setenv("_GROUPROBUST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", "3")
    code, out, _ = cli([], capsys)
    assert code == 0 and out.split() == [expected]
