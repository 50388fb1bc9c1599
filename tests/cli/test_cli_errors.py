"""Library errors carry a subject; the command line prints the flag that sets it (and exits 2)."""

from pathlib import Path

import pytest

from grouprobust.cli import main
from grouprobust.cli.flags import describe_error, flag_for
from grouprobust.errors import GroupRobustError

SWEEP = Path(__file__).resolve().parents[2] / "examples" / "sweep-toy.yaml"


def _error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("subject, flag", [
    ("hparam:lr", "--set lr=VALUE"), ("data:features", "--data features=VALUE"), ("select", "--select"),
    ("regime", "--regime"), ("device", "--device"), ("stage1", "--from"), ("out", "--out"),
    ("executor", "--executor"), ("workers", "--workers"), ("address", "--address"), ("root", "--root"),
    ("backbone", "--backbone"), ("batch_size", "--batch-size"), ("data", "--data KEY=VALUE"),
])
def test_subjects_map_to_flags(subject, flag):
    assert flag_for(subject) == flag
    assert describe_error(GroupRobustError("bad value", subject=subject)) == f"bad value (set it with {flag})"


@pytest.mark.parametrize("subject", [None, "", "spec", "nosuch", "nosuch:thing", "hparam:"])
def test_unknown_or_missing_subject_prints_the_message_alone(subject):
    assert describe_error(GroupRobustError("bad value", subject=subject)) == "bad value"


def test_sweep_workers_error_names_the_flag(tmp_path, capsys):
    err = _error_line(["sweep", str(SWEEP), "--out", str(tmp_path / "sw"), "--workers", "0"], capsys)
    assert err.startswith("error: workers must be >= 1") and err.endswith("(set it with --workers)")
    assert not (tmp_path / "sw").exists()


def test_sweep_out_that_is_a_file_names_the_flag(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    err = _error_line(["sweep", str(SWEEP), "--out", str(out), "--dry-run"], capsys)
    assert "is a file" in err and err.endswith("(set it with --out)")


def test_benchmark_root_error_names_the_flag(tmp_path, capsys):
    err = _error_line(["datasets", "--check", "waterbirds", "--root", str(tmp_path / "nope")], capsys)
    assert "is not a directory" in err and err.endswith("(set it with --root)")


def test_dataset_option_error_names_the_data_flag(tmp_path, capsys):
    err = _error_line(["train", "--dataset", "waterbirds", "--out", str(tmp_path / "run"), "-q"], capsys)
    assert "extract features first" in err and "--root PATH" in err and err.endswith("(set it with --root)")
    assert not (tmp_path / "run").exists()


def test_analysis_errors_name_the_command_flags(tmp_path, capsys):
    out = tmp_path / "al"
    err = _error_line(["analyze", "alignment", "-o", str(out), "--l2", "-1"], capsys)
    assert err.endswith("(set it with --l2)")
    err = _error_line(["analyze", "alignment", "-o", str(out), "--set", "loss=squared"], capsys)
    assert "cross-entropy" in err and err.endswith("(set it with --set loss=VALUE)")
    assert not out.exists()


def test_features_out_error_names_the_flag(tmp_path, capsys):
    out = tmp_path / "f"
    out.mkdir()
    (out / "meta.json").write_text("{}")
    err = _error_line(["features", "--dataset", "waterbirds", "--root", str(tmp_path), "--backbone", "pixels",
                       "--out", str(out)], capsys)
    assert "already holds a feature set" in err and err.endswith("(set it with --force)")
