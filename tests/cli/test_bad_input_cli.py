"""Bad input to every subcommand: exit 2, exactly one ``error:`` line on stderr, no traceback, nothing written.

Each case is (subcommand family, argv with ``{tmp}`` for the test's folder, a setup that prepares files,
text the one line must contain). The folder's contents are compared before and after the command.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from grouprobust.cli import main
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.feature_store import save_feature_splits

SWEEP_OK = "datasets: {spurious-gaussian: {n: 100}}\nmethods: [erm]\nset: {epochs: 1}\n"


def _file(tmp: Path) -> None:
    (tmp / "file").write_text("x")


def _sweep(text: str):
    def setup(tmp: Path) -> None:
        (tmp / "s.yaml").write_text(text)
    return setup


def _features(meta: str | None = None, npz: bytes | None = None):
    def setup(tmp: Path) -> None:
        rng = np.random.default_rng(0)
        parts = [GroupDataset(rng.normal(size=(8, 3)), np.arange(8) % 2, (np.arange(8) // 2) % 2, 2, 2, split)
                 for split in ("train", "val", "test")]
        save_feature_splits(DatasetSplits(*parts, name="toy"), tmp / "feats")
        if meta is not None:
            (tmp / "feats" / "meta.json").write_text(meta)
        if npz is not None:
            (tmp / "feats" / "val.npz").write_bytes(npz)
    return setup


def _runs(tmp: Path) -> None:
    run = tmp / "sw" / "runs" / "r1"
    run.mkdir(parents=True)
    config = {"dataset": "spurious-gaussian", "method": "erm", "seed": 0, "data": {}, "hparams": {},
              "regime": "full", "select": "val_worst_group_acc"}
    (run / "config.json").write_text(json.dumps(config))
    metrics = {"worst_group_acc": 0.5, "avg_acc": 0.7, "per_group": {}}
    (run / "result.json").write_text(json.dumps({"metrics": {"val": metrics, "test": metrics}}))


def _mine(tmp: Path, name: str) -> None:
    """A user's own file at ``tmp/name``, where a command would write one of its own."""
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text("mine")


TRAIN = ["train", "-d", "spurious-gaussian", "-q", "--epochs", "1"]
CASES = [
    # train
    ("train", TRAIN + ["-o", "{tmp}/r", "--seed", "-1"], None, "seed must be a whole number"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--seed", "99999999999"], None, "seed must be a whole number"),
    ("train", TRAIN + ["-o", "{tmp}/file/r"], _file, "which is a file"),
    ("train", TRAIN + ["-o", "{tmp}/file"], _file, "is a file"),
    ("train", TRAIN + ["-o", "/proc/grouprobust-run"], None, "cannot create run directory"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "weight_decay=-1"], None, "weight_decay"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "momentum=-0.5"], None, "momentum"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "momentum=1"], None, "momentum"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "hidden=0"], None, "hidden"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "lr=nan"], None, "lr"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "lr=inf"], None, "finite"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "weight_decay=-inf"], None, "finite"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "p=nan"], None, "--data p"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "n=inf"], None, "--data n"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--set", "lr"], None, "malformed --set"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--select", "nosuch"], None, "unknown selection rule"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--select", "val_wilds_worst_group_acc"], None, "evaluation groups"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--bogus"], None, "No such option: --bogus"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--seed", "abc"], None, "Invalid value for '--seed'"),
    ("train", ["train", "-o", "{tmp}/r"], None, "Missing option '--dataset'"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "path={tmp}/feats", "-d", "features"],
     _features(meta="[1, 2]"), "not an object"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "path={tmp}/feats", "-d", "features"],
     _features(meta='{"n_classes": "two", "n_attrs": 2}'), "n_classes must be a positive integer"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "path={tmp}/feats", "-d", "features"],
     _features(meta="\x00\xff garbage"), "meta.json"),
    ("train", TRAIN + ["-o", "{tmp}/r", "--data", "path={tmp}/feats", "-d", "features"],
     _features(npz=b"junk"), "not a readable .npz"),
    ("demo", ["demo", "-o", "{tmp}/file/demo"], _file, "which is a file"),
    ("demo", ["demo", "--bogus"], None, "No such option"),
    # catalog commands
    ("datasets", ["datasets", "--check", "waterbirds"], None, "needs --root"),
    ("datasets", ["datasets", "--check", "nosuch", "--root", "{tmp}"], None, "unknown dataset 'nosuch'"),
    ("datasets", ["datasets", "--check", "waterbirds", "--root", "{tmp}/nope"], None, "is not a directory"),
    ("methods", ["methods", "--bogus"], None, "No such option"),
    ("selection-rules", ["selection-rules", "extra"], None, "unexpected extra argument"),
    ("top", ["nosuch"], None, "No such command"),
    # features
    ("features", ["features", "-d", "civilcomments", "--root", "{tmp}", "-b", "hashing", "-o", "{tmp}/file/f"],
     _file, "which is a file"),
    ("features", ["features", "-d", "civilcomments", "--root", "{tmp}", "-b", "hashing", "-o", "{tmp}/f",
                  "--batch-size", "0"], None, "batch_size"),
    ("features", ["features", "-d", "civilcomments", "--root", "{tmp}"], None, "Missing option"),
    # sweep
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"], _sweep("datasets: spurious-gaussian\nmethods: [erm]\n"),
     "datasets: must be a mapping"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"],
     _sweep("datasets: [spurious-gaussian]\nmethods: {erm: {grid: {lr: [.nan]}}}\n"), "finite"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"],
     _sweep("datasets: [spurious-gaussian]\nmethods: {erm: {set: {epochs: .inf}}}\n"), "epochs"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"],
     _sweep("datasets: [spurious-gaussian]\nmethods: {erm: {random: 3}}\n"), "methods.erm.random"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"], _sweep("datasets: [spurious-gaussian]\nmethods: [erm]\n"
                                                                  "seeds: [-1]\n"), "seeds[0]"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"], _sweep("datasets: {waterbirds: {}}\nmethods: [erm]\n"),
     "datasets.waterbirds"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"],
     _sweep("datasets: {features: {path: /nonexistent}}\nmethods: [erm]\n"), "datasets.features"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"], _sweep("- 1\n- 2\n"), "must hold a mapping"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw", "--address", "127.0.0.1:1"], _sweep(SWEEP_OK),
     "no Ray cluster answers"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw", "--workers", "0"], _sweep(SWEEP_OK), "workers"),
    ("sweep", ["sweep", "{tmp}/s.yaml"], _sweep(SWEEP_OK), "Missing option '--out'"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "/proc/grouprobust-sweep"], _sweep(SWEEP_OK),
     "cannot create sweep directory /proc/grouprobust-sweep: /proc is not writable"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/file/sw"], lambda t: (_file(t), _sweep(SWEEP_OK)(t)),
     "which is a file"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/file/sw", "--dry-run"],
     lambda t: (_file(t), _sweep(SWEEP_OK)(t)), "which is a file"),
    ("sweep", ["sweep", "{tmp}/s.yaml", "-o", "{tmp}/sw"], lambda t: (_sweep(SWEEP_OK)(t), _mine(t, "sw/runs")),
     "runs is a file"),
    # report
    ("report", ["report", "{tmp}/nope"], None, "is not a directory"),
    ("report", ["report", "{tmp}"], None, "no finished or failed runs"),
    ("report", ["report", "{tmp}/sw", "-o", "{tmp}/file/rep", "--no-plots"], lambda t: (_file(t), _runs(t)),
     "which is a file"),
    ("report", ["report", "{tmp}/sw", "-o", "/proc/grouprobust-report", "--no-plots"], _runs, "cannot create"),
    ("report", ["report", "{tmp}/sw", "--select", "nosuch", "--no-plots"], _runs, "unknown selection rule"),
    ("report", ["report", "{tmp}/sw", "--select", "val_macro_f1", "--no-plots"], _runs, "choose one of"),
    ("report", ["report", "{tmp}/sw", "-o", "{tmp}/mine", "--no-plots"],
     lambda t: (_runs(t), _mine(t, "mine/summary.csv")), "summary.csv already exists and no earlier report wrote it"),
    ("report", ["report", "{tmp}/sw", "--no-plots"], lambda t: (_runs(t), _mine(t, "sw/report/report.md")),
     "report.md already exists and no earlier report wrote it"),
    # analyze
    ("analyze", ["analyze", "alignment", "-o", "{tmp}/al", "--seeds", "-1"], None, "seed must be"),
    ("analyze", ["analyze", "completeness", "-o", "{tmp}/co", "--seeds", "-3"], None, "seed must be"),
    ("analyze", ["analyze", "alignment", "-o", "{tmp}/al", "--l2", "nan"], None, "finite"),
    ("analyze", ["analyze", "implicit-bias", "-o", "{tmp}/ib", "--lr", "nan"], None, "finite lr"),
    ("analyze", ["analyze", "implicit-bias", "-o", "{tmp}/ib", "--steps", "0"], None, "steps >= 1"),
    ("analyze", ["analyze", "nosuch"], None, "No such command"),
    ("analyze", ["analyze", "alignment", "--l2"], None, "requires an argument"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file and folder under ``root`` (its bytes), except the empty hidden lock files a claimed run
    path keeps next to it (grouprobust.rundir: deleting a lock file on release is unsafe)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))
            if not (p.name.startswith(".") and p.name.endswith(".lock") and p.is_file() and not p.stat().st_size)}


@pytest.mark.parametrize("family, argv, setup, expect", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(family, argv, setup, expect, tmp_path, capsys):
    if setup is not None:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "the command wrote or changed files"


def test_every_subcommand_has_cases():
    families = {c[0] for c in CASES}
    assert {"train", "demo", "datasets", "methods", "selection-rules", "features", "sweep", "report",
            "analyze"} <= families


def test_a_sweep_with_failed_trials_finishes_the_others_and_exits_1(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("datasets: {spurious-gaussian: {n: 100, n_val: 50, n_test: 50}}\nset: {epochs: 1}\n"
                    "methods: {erm: {grid: {model: [mlp, cnn]}}}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "-o", str(tmp_path / "sw"), "-q"])
    assert exit_info.value.code == 1
    runs = sorted(p for p in (tmp_path / "sw" / "runs").iterdir() if not p.name.startswith("."))  # no lock files
    assert sorted((r / "result.json").is_file() for r in runs) == [False, True]  # the mlp trial still finished
    assert "1 trial(s) failed" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["analyze"]])
def test_a_command_without_arguments_prints_its_help_once(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr().out
    assert exit_info.value.code == 2 and out.count("Usage:") == 1
