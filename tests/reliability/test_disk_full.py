"""Fault injection: a disk that fills up (a size-limited tmpfs, mounted when the tests run as root; skipped
otherwise). Each command stops with one line naming the disk, and what was there before stays whole."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from grouprobust.cli import main

from cli_runner import ok
from readers_fixtures import write_waterbirds

TINY = ["--data", "n=200", "--data", "n_val=100", "--data", "n_test=100"]


class Disk:
    """A small tmpfs at ``path``; `fill` leaves only ``free`` bytes on it."""

    def __init__(self, path):
        self.path = path
        self.filler = path / "filler"

    def fill(self, free=0):
        self.filler.unlink(missing_ok=True)
        st = os.statvfs(self.path)
        size = max(st.f_bavail * st.f_frsize - free, 0)
        with open(self.filler, "wb") as fh:
            try:
                fh.write(b"\0" * size)
            except OSError:
                pass

    def free(self):
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine refuses to mount a tmpfs")
    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def full_disk_error(argv, capsys, disk):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "is full" in err and str(disk.path) in err, err
    return err


def visible(path):
    """Every file under ``path`` but the filler and hidden lock files, with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "filler" and not p.name.endswith(".lock")}


@pytest.mark.parametrize("free", [0, 12_000])
def test_train_on_a_full_disk_is_one_line_and_leaves_nothing(disk, capsys, free):
    disk.fill(free)
    full_disk_error(["train", "-d", "spurious-gaussian", *TINY, "--set", "hidden=512", "--epochs", "1",
                     "--out", str(disk.path / "runs" / "erm"), "-q"], capsys, disk)
    assert visible(disk.path) == {} and not (disk.path / "runs").exists()


def test_sweep_on_a_disk_that_fills_keeps_finished_trials_and_stops(disk, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"seeds": [0, 1], "set": {"epochs": 1, "hidden": 512},
                                    "datasets": {"spurious-gaussian": {"n": 200, "n_val": 100, "n_test": 100}},
                                    "methods": ["erm"]}))
    out = disk.path / "sweep"
    ok(["sweep", str(write_one_seed(spec, tmp_path)), "--out", str(out), "-q"], capsys)  # seed 0 only
    before = visible(out)
    disk.fill(0)
    full_disk_error(["sweep", str(spec), "--out", str(out), "-q"], capsys, disk)
    after = visible(out)
    assert {k: v for k, v in after.items() if k != "sweep.json"} == {k: v for k, v in before.items()
                                                                     if k != "sweep.json"}
    assert not any("error.json" in k for k in after)  # the trial the disk stopped is not recorded as failed
    disk.free()
    ok(["sweep", str(spec), "--out", str(out), "-q"], capsys)
    assert sum(k.endswith("result.json") for k in visible(out)) == 2


def write_one_seed(spec, tmp_path):
    one = tmp_path / "one.yaml"
    data = yaml.safe_load(spec.read_text())
    one.write_text(yaml.safe_dump({**data, "seeds": [0]}))
    return one


def test_report_on_a_full_disk_keeps_the_earlier_report_whole(disk, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"seeds": [0, 1], "set": {"epochs": 1, "model": "linear"},
                                    "datasets": {"spurious-gaussian": {"n": 200, "n_val": 100, "n_test": 100}},
                                    "methods": ["erm", "groupdro"]}))
    sweep = tmp_path / "sweep"
    ok(["sweep", str(spec), "--out", str(sweep), "-q"], capsys)
    out = disk.path / "report"
    ok(["report", str(sweep), "--out", str(out), "--no-plots"], capsys)
    before = visible(out)
    disk.fill(6_000)  # room for a file or two of the new report, not for all of them
    full_disk_error(["report", str(sweep), "--out", str(out)], capsys, disk)
    assert visible(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_features_on_a_full_disk_write_nothing(disk, tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb", per_group=3)
    out = disk.path / "feats"
    disk.fill(4_000)
    full_disk_error(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "pixels",
                     "--out", str(out), "-q"], capsys, disk)
    assert visible(disk.path) == {} and not out.exists()


def test_infer_groups_on_a_full_disk_writes_neither_file(disk, tmp_path, capsys):
    run_dir = tmp_path / "erm"
    ok(["train", "-d", "spurious-gaussian", *TINY, "--epochs", "1", "--out", str(run_dir), "-q"], capsys)
    disk.fill(0)
    full_disk_error(["infer-groups", "--from", str(run_dir), "--out", str(disk.path / "g.npz")], capsys, disk)
    assert visible(disk.path) == {}
    np.testing.assert_equal(sorted(p.name for p in disk.path.iterdir()), ["filler"])
