"""Files a user already has: no command replaces or deletes what it did not write for the same config,
and every file and directory the library writes follows the user's umask."""

import json
import os
import stat

import numpy as np
import pytest
import yaml

from grouprobust.config import resolve_config
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.runs import run
from grouprobust.sweep import run_sweep
from grouprobust.sweep.store import MANIFEST

from cli_runner import ok
from cli_runner import refused as error_line
from readers_fixtures import write_waterbirds

TINY = {"n": 200, "n_val": 100, "n_test": 100}


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_run_and_sweep_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        cfg = resolve_config("spurious-gaussian", "erm", data=TINY, hparams={"epochs": 1, "model": "linear"})
        run(cfg, tmp_path / "run")
        gsr = resolve_config("spurious-gaussian", "gsr", data=TINY, hparams={"epochs": 1, "n_steps": 2})
        run(gsr, tmp_path / "gsr")  # a two-stage run: stage1/, holdout.json, weights.npz
        spec = tmp_path / "sweep.yaml"
        spec.write_text(yaml.safe_dump({"seeds": [0], "set": {"epochs": 1, "model": "linear"},
                                        "datasets": {"spurious-gaussian": TINY}, "methods": ["erm"]}))
        run_sweep(spec, tmp_path / "sweep")
    finally:
        os.umask(old)
    paths = [p for p in tmp_path.rglob("*") if p != spec]
    names = {p.name for p in paths}
    assert {"model.pt", "history.jsonl", "config.json", "result.json", "weights.npz", "holdout.json",
            MANIFEST, ".run.lock"} <= names
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert mode == want, f"{p.relative_to(tmp_path)}: {oct(mode)}, umask {oct(mask)} wants {oct(want)}"


def test_train_out_naming_the_current_directory_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    for out in ("", ".", ".."):
        err = error_line(["train", "--dataset", "spurious-gaussian", "--out", out, "-q", "--epochs", "1"], capsys)
        assert "current directory" in err and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_features_keep_a_users_files(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb", per_group=2)
    out = tmp_path / "mine"
    out.mkdir()
    np.savez(out / "train.npz", x=np.arange(3))  # the user's own file, not a feature set
    before = (out / "train.npz").read_bytes()
    args = ["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "pixels", "--out", str(out), "-q"]
    err = error_line(args, capsys)
    assert str(out) in err and "train.npz" in err and err.endswith("(set it with --force)")
    assert (out / "train.npz").read_bytes() == before and not (out / "meta.json").exists()
    ok(args + ["--force"], capsys)  # asked for: the feature files are replaced
    assert load_feature_splits(out).train.x.shape[0] == 8


def test_analyze_keeps_an_existing_report(tmp_path, capsys):
    out = tmp_path / "a"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    args = ["analyze", "implicit-bias", "-o", str(out), "--steps", "20", "--losses", "squared", "--l2", "0"]
    err = error_line(args, capsys)
    assert "report.md" in err and err.endswith("(set it with --force)")
    assert (out / "report.md").read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == ["report.md"]
    ok(args + ["--force"], capsys)
    assert (out / "report.md").read_text().startswith("# Implicit bias")
    assert json.loads((out / "info.json").read_text())


def sweep_file(path, lrs, seeds):
    path.write_text(yaml.safe_dump({"seeds": seeds, "set": {"epochs": 1, "model": "linear"},
                                    "datasets": {"spurious-gaussian": TINY}, "methods": {"erm": {"grid": {"lr": lrs}}}}))
    return path


def listed(out):
    return {t["run_id"] for t in json.loads((out / MANIFEST).read_text())["trials"]}


def test_a_different_sweep_never_shrinks_the_manifest(tmp_path, capsys):
    out = tmp_path / "out"
    first = sweep_file(tmp_path / "a.yaml", [0.01], [0, 1])
    ok(["sweep", str(first), "--out", str(out), "-q"], capsys)
    ids = listed(out)
    manifest = (out / MANIFEST).read_bytes()
    grown = sweep_file(tmp_path / "b.yaml", [0.01], [0, 1, 2])  # the same sweep with one more seed: accepted
    ok(["sweep", str(grown), "--out", str(out), "-q"], capsys)
    assert listed(out) > ids and len(listed(out)) == 3
    manifest = (out / MANIFEST).read_bytes()
    other = sweep_file(tmp_path / "c.yaml", [0.1], [0])  # another sweep: refused before anything runs
    err = error_line(["sweep", str(other), "--out", str(out), "-q"], capsys)
    assert MANIFEST in err and "belongs to another sweep" in err and err.endswith("(set it with --force)")
    assert (out / MANIFEST).read_bytes() == manifest and len(list((out / "runs").glob("[!.]*"))) == 3
    assert "belongs to another sweep" in error_line(["sweep", str(other), "--out", str(out), "--dry-run"], capsys)
    ok(["sweep", str(other), "--out", str(out), "-q", "--force"], capsys)  # merged: every trial stays listed
    merged = json.loads((out / MANIFEST).read_text())
    assert len(merged["trials"]) == 4 and {p.name for p in (out / "runs").glob("[!.]*")} == listed(out)
    assert [e["spec_file"] for e in merged["earlier_specs"]] == [str(grown)] and merged["spec_file"] == str(other)
