"""`grouprobust analyze ...` writes a directory with CSV, markdown and PNG, and rejects bad input cleanly."""

import pandas as pd
import pytest

from grouprobust.cli import main


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def _assert_directory(path, stem):
    for name in (f"{stem}_table.csv", f"{stem}.png", "report.md", "info.json"):
        assert (path / name).is_file(), name
    assert (path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| " in (path / "report.md").read_text()


def test_implicit_bias_command_writes_directory(tmp_path, capsys):
    out = tmp_path / "ib"
    assert _run(["analyze", "implicit-bias", "-o", str(out), "--steps", "300", "--losses", "squared,poly-tailed",
                 "--l2", "0"]) in (0, None)
    _assert_directory(out, "implicit_bias")
    curves = pd.read_csv(out / "implicit_bias_curves.csv")
    assert set(curves["loss"]) == {"squared", "poly-tailed"} and curves["step"].max() == 300
    assert "poly-tailed" in capsys.readouterr().out


def test_alignment_command_writes_directory_with_bound(tmp_path):
    out = tmp_path / "al"
    assert _run(["analyze", "alignment", "-o", str(out), "--l2", "0,0.1", "--data", "n=400", "--data", "n_val=200",
                 "--data", "n_test=200", "--set", "epochs=5"]) in (0, None)
    _assert_directory(out, "alignment")
    runs = pd.read_csv(out / "alignment_runs.csv")
    assert set(runs["method"]) == {"erm", "groupdro"} and len(runs) == 4
    dro = runs[runs["method"] == "groupdro"]
    assert (dro["loss_gap"] <= dro["bound"] + 1e-9).all()
    assert runs[["cos_spurious", "cos_oracle", "cos_true_core"]].abs().le(1).all().all()


def test_completeness_command_writes_directory(tmp_path):
    out = tmp_path / "dci"
    assert _run(["analyze", "completeness", "-o", str(out), "--data", "n=400", "--data", "n_val=200",
                 "--data", "n_test=300", "--set", "epochs=3"]) in (0, None)
    _assert_directory(out, "completeness")
    runs = pd.read_csv(out / "completeness_runs.csv")
    assert runs["completeness_label"].between(0, 1).all() and len(runs) == 2


@pytest.mark.parametrize("argv, message", [
    (["analyze", "implicit-bias", "--l2", "abc"], "--l2"),
    (["analyze", "implicit-bias", "--losses", "hinge"], "unknown loss"),
    (["analyze", "alignment", "--methods", "groupdro"], "include erm"),
    (["analyze", "completeness", "--methods", "erm,nosuch"], "unknown method"),
    (["analyze", "alignment", "--set", "nosuch=1"], "unknown hyper-parameter"),
    (["analyze", "alignment", "--features", "/nonexistent/features"], "not found"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert _run(argv + ["-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not out.exists()
