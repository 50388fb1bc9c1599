import json
import subprocess
import sys

import pytest

from cli_runner import cli

TINY = ["--data", "n=300", "--data", "n_val=200", "--data", "n_test=300"]


def test_train_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = cli(["train", "--dataset", "spurious-gaussian", "--method", "erm", "--epochs", "2", "--quiet",
                           "--set", "lr=0.01", *TINY, "--out", str(out)], capsys)
    assert code == 0
    assert {"config.json", "history.jsonl", "result.json", "model.pt"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert config["hparams"]["lr"] == 0.01 and config["hparams"]["epochs"] == 2 and config["data"]["n"] == 300
    assert config["versions"]["torch"]
    for key in ("dataset", "method", "seed", "selected", "metrics", "time_s"):
        assert key in result
    m = result["metrics"]["test"]
    assert 0 <= m["worst_group_acc"] <= m["group_balanced_acc"] <= 1
    assert set(m["per_group"]) == {"0", "1", "2", "3"}
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    assert "worst-group" in stdout and str(out) in stdout.replace("\n", "")


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "nope", "--method", "erm"], "unknown dataset 'nope'"),
    (["--dataset", "spurious-gaussian", "--method", "nope"], "unknown method 'nope'"),
    (["--dataset", "spurious-gaussian", "--set", "lr"], "malformed --set 'lr'"),
    (["--dataset", "spurious-gaussian", "--set", "lr=fast"], "lr must be float"),
    (["--dataset", "spurious-gaussian", "--data", "p=often"], "--data p must be float"),
    (["--dataset", "spurious-gaussian", "--regime", "none", "--select", "val_worst_group_acc"], "needs validation group"),
])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    code, _, err = cli(["train", *args, "--out", str(out), "--quiet"], capsys)
    assert code == 2
    assert fragment in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert not out.exists()


def test_out_dir_with_a_different_run_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--dataset", "spurious-gaussian", "--epochs", "1", "--quiet", *TINY, "--out", str(out)]
    assert cli(base, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = cli(base + ["--seed", "1"], capsys)
    assert code == 2 and "already holds a different run" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = cli(["train", "--dataset", "spurious-gaussian", "--quiet", "--out", str(tmp_path / "other")], capsys)
    assert code == 2 and "not a grouprobust run directory" in err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_listings(capsys):
    code, stdout, _ = cli(["methods"], capsys)
    assert code == 0 and "erm" in stdout
    code, stdout, _ = cli(["datasets"], capsys)
    assert code == 0 and "colored-digits" in stdout and "spurious-gaussian" in stdout


@pytest.mark.slow
def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grouprobust", "train", "--dataset", "nope", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset")
