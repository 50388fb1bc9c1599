"""Bad inputs and faults a careful user meets: each is one line and exit 2 (or a documented note), and
nothing already on disk is lost or mixed."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.runs import run
from grouprobust.sweep import collect_runs, run_sweep
from grouprobust.sweep.report import write_report

from cli_runner import ok, refused
from table_fixtures import census_frame

TINY = {"n": 200, "n_val": 100, "n_test": 100}
FAST = {"epochs": 1, "model": "linear"}


def tree(path):
    """Every path under ``path`` with its bytes (files) or None (folders, links as their target)."""
    return {str(p.relative_to(path)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def write_spec(path, **extra):
    spec = {"seeds": [0], "set": FAST, "datasets": {"spurious-gaussian": TINY}, "methods": ["erm"], **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A finished two-seed sweep (read-only use: copy it before changing it)."""
    root = tmp_path_factory.mktemp("sweep")
    run_sweep(write_spec(root / "s.yaml", seeds=[0, 1]), root / "out")
    return root / "out"


def copy_sweep(sweep_dir, tmp_path):
    target = tmp_path / "sweep"
    shutil.copytree(sweep_dir, target)
    return target


# -- data loss -------------------------------------------------------------------------------------------

def test_sweep_refuses_a_sweep_json_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text('{"mine": [1, 2, 3]}\n')
    err = refused(["sweep", str(write_spec(tmp_path / "s.yaml")), "--out", str(out), "-q"], capsys)
    assert "sweep.json" in err and "not" in err
    assert (out / "sweep.json").read_text() == '{"mine": [1, 2, 3]}\n'
    assert not (out / "runs").exists()


# -- silent results --------------------------------------------------------------------------------------

def test_a_report_folder_is_claimed_by_one_report_at_a_time(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom grouprobust.sweep.report import claim_report_dir\n"
         f"with claim_report_dir({str(sweep / 'report')!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        err = refused(["report", str(sweep)], capsys)
        assert "another process" in err
        assert not (sweep / "report" / "report.md").exists()
    finally:
        holder.kill()
        holder.wait()
    ok(["report", str(sweep)], capsys)  # the claim died with its process
    assert (sweep / "report" / "report.md").is_file()


def test_a_copied_run_directory_is_counted_once_with_a_note(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path)
    first = sorted(p for p in (sweep / "runs").iterdir() if not p.name.startswith("."))[0]
    shutil.copytree(first, sweep / "runs" / f"{first.name} copy")
    runs = collect_runs(sweep)
    assert sorted(runs["status"]) == ["copy", "finished", "finished"]
    assert runs.loc[runs["status"] == "copy", "run_id"].item() == f"{first.name} copy"
    report, out = write_report(sweep, plots=False)
    assert int(report.summary["n_seeds"].iloc[0]) == 2
    text = (out / "report.md").read_text()
    assert "copy" in text and "counted once" in text


def test_train_into_a_symlink_to_a_folder_writes_into_the_folder(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    cfg = resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST)
    run(cfg, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "result.json").is_file()
    assert run(cfg, link).get("reused")


def test_sweep_and_report_into_a_symlink_to_a_folder(sweep_dir, tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "rep").symlink_to(target)
    ok(["report", str(sweep_dir), "--out", str(tmp_path / "rep"), "--no-plots"], capsys)
    assert (tmp_path / "rep").is_symlink() and (target / "report.md").is_file()


def test_a_key_written_twice_in_a_yaml_sweep_file_is_refused(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("seeds: [0]\nset: {epochs: 1, model: linear}\ndatasets:\n  spurious-gaussian: {n: 200}\n"
                    "methods: [erm]\nseeds: [0, 1]\n")
    err = refused(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert "seeds" in err and "twice" in err and "line 6" in err
    nested = tmp_path / "n.yaml"
    nested.write_text("seeds: [0]\nset: {epochs: 1, epochs: 2}\ndatasets:\n  spurious-gaussian: {n: 200}\n"
                      "methods: [erm]\n")
    assert "epochs" in refused(["sweep", str(nested), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert not (tmp_path / "out").exists()


def test_a_table_whose_feature_columns_are_all_empty_is_refused(tmp_path, capsys):
    frame = census_frame(200)
    frame["age"] = np.nan
    frame["hours_per_week"] = np.nan
    frame["workclass"] = None
    frame["education"] = None
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    err = refused(["train", "-d", "table", "--data", f"path={path}", "--data", "label=income", "--data",
                   "attribute=sex", "--out", str(tmp_path / "run"), "-q", "--epochs", "1"], capsys)
    assert "empty" in err and "age" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--epochs", "2", "--set", "epochs=3"],
                                  ["--set", "lr=0.1", "--set", "lr=0.2"]])
def test_the_same_setting_twice_with_different_values_is_refused(tmp_path, capsys, args):
    err = refused(["train", "-d", "spurious-gaussian", "--data", "n=200", "--out", str(tmp_path / "run"), "-q",
                   *args], capsys)
    assert "twice" in err or "both" in err
    assert not tmp_path.joinpath("run").exists()


def test_the_same_setting_twice_with_the_same_value_is_accepted(tmp_path, capsys):
    ok(["train", "-d", "spurious-gaussian", "--data", "n=200", "--data", "n_val=100", "--data", "n_test=100",
        "--out", str(tmp_path / "run"), "-q", "--epochs", "1", "--set", "epochs=1", "--set", "model=linear"], capsys)


def test_report_on_a_folder_whose_every_run_is_damaged_is_one_line(sweep_dir, tmp_path, capsys):
    sweep = copy_sweep(sweep_dir, tmp_path)
    for run_dir in (sweep / "runs").iterdir():
        if not run_dir.name.startswith("."):
            (run_dir / "result.json").write_text("{damaged")
    err = refused(["report", str(sweep)], capsys)
    assert "unreadable" in err or "damaged" in err
    assert not (sweep / "report").exists()


# -- tracebacks: file-system faults ------------------------------------------------------------------------

def make_unwritable(folder):
    """Make ``folder`` refuse new entries: immutable as root (chattr +i), read-only otherwise; returns an
    undo function, or skips when neither works here."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                             capture_output=True).returncode:
            pytest.skip("cannot make a folder immutable here")
        return lambda: subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o555)
    return lambda: folder.chmod(0o755)


def test_an_unwritable_folder_below_out_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "runs").mkdir(parents=True)
    undo = make_unwritable(out / "runs")
    try:
        err = refused(["sweep", str(write_spec(tmp_path / "s.yaml")), "--out", str(out), "-q"], capsys)
        assert "runs" in err and "not writable" in err
        report_out = tmp_path / "rep"
        report_out.mkdir()
        undo_report = make_unwritable(report_out)
        try:
            err = refused(["train", "-d", "spurious-gaussian", "--data", "n=200", "--epochs", "1", "--out",
                           str(report_out / "run"), "-q"], capsys)
            assert "not writable" in err
        finally:
            undo_report()
    finally:
        undo()
    assert sorted(p.name for p in out.iterdir()) == ["runs"] and list((out / "runs").iterdir()) == []


@pytest.mark.parametrize("command", ["train", "sweep", "report", "features"])
def test_a_dangling_symlink_as_out_is_refused_before_any_work(tmp_path, capsys, command, sweep_dir, monkeypatch):
    from grouprobust import training

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the output path was checked")

    monkeypatch.setattr(training.Trainer, "fit", no_training)
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere" / "run")
    argv = {"train": ["train", "-d", "spurious-gaussian", "--data", "n=200", "--epochs", "1", "-q"],
            "sweep": ["sweep", str(write_spec(tmp_path / "s.yaml")), "-q"],
            "report": ["report", str(sweep_dir)],
            "features": ["features", "--dataset", "waterbirds", "--root", str(tmp_path / "wb"), "--backbone",
                         "pixels", "-q"]}[command]
    if command == "features":
        from readers_fixtures import write_waterbirds

        write_waterbirds(tmp_path / "wb", per_group=2)
    err = refused([*argv, "--out", str(out)], capsys)
    assert "symbolic link" in err and "does not exist" in err
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_refused_train_leaves_no_folder_and_no_lock(tmp_path, capsys):
    frame = census_frame(100)
    frame.to_csv(tmp_path / "t.csv", index=False)
    err = refused(["train", "-d", "table", "--data", f"path={tmp_path / 't.csv'}", "--data", "label=nope", "--data",
                   "attribute=sex", "--epochs", "1", "--out", str(tmp_path / "a" / "b" / "run"), "-q"], capsys)
    assert "nope" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
    cfg = resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST)
    run(cfg, tmp_path / "held")
    other = resolve_config("spurious-gaussian", "erm", seed=1, data=TINY, hparams=FAST)
    with pytest.raises(GroupRobustError, match="already holds a different run"):
        run(other, tmp_path / "held")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".held.lock", "held", "t.csv"]


def test_a_finished_run_and_sweep_are_reused_on_a_read_only_file_system(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    if os.geteuid() == 0:
        mount = tmp_path / "ro"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here")
        undo = lambda: subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # noqa: E731
    else:
        mount = tmp_path / "ro"
        mount.mkdir()
        undo = lambda: mount.chmod(0o755)  # noqa: E731
    try:
        train = ["train", "-d", "spurious-gaussian", "--data", "n=200", "--data", "n_val=100", "--data",
                 "n_test=100", "--epochs", "1", "--set", "model=linear", "--out", str(mount / "run"), "-q"]
        ok(train, capsys)
        ok(["sweep", str(spec), "--out", str(mount / "sweep"), "-q"], capsys)
        before = tree(mount)
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        else:
            for folder in [mount, *[p for p in mount.rglob("*") if p.is_dir()]]:
                folder.chmod(0o555)
        assert "already holds this finished run" in " ".join(ok(train, capsys).split())
        ok(["sweep", str(spec), "--out", str(mount / "sweep"), "-q"], capsys)
        assert tree(mount) == before
    finally:
        undo()


# -- tracebacks: files that are not what the project expects ----------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_files_in_another_encoding_are_one_line_naming_the_file(tmp_path, capsys, encoding):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: café\nseeds: [0]\nmethods: [erm]\ndatasets: {spurious-gaussian: {n: 200}}\n",
                    encoding=encoding)
    err = refused(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert str(spec) in err and "UTF-8" in err
    frame = census_frame(100)
    frame["workclass"] = frame["workclass"].str.replace("Gov", "Gové")
    frame.to_csv(tmp_path / "t.csv", index=False, encoding=encoding)
    err = refused(["train", "-d", "table", "--data", f"path={tmp_path / 't.csv'}", "--data", "label=income",
                   "--data", "attribute=sex", "--epochs", "1", "--out", str(tmp_path / "run"), "-q"], capsys)
    assert "t.csv" in err and "UTF-8" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("erm") / "erm"
    run(resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST), path)
    return path


DAMAGE = {
    "model.pt garbage": lambda p: (p / "model.pt").write_bytes(b"not a model"),
    "model.pt truncated": lambda p: (p / "model.pt").write_bytes((p / "model.pt").read_bytes()[:200]),
    "model.pt pickle": lambda p: (p / "model.pt").write_bytes(b"\x80\x04K\x01."),
    "config.json list": lambda p: (p / "config.json").write_text("[]"),
    "config.json without keys": lambda p: (p / "config.json").write_text('{"dataset": 5}'),
    "config.json wrong types": lambda p: (p / "config.json").write_text(
        '{"dataset": "spurious-gaussian", "method": "erm", "seed": "x", "data": [], "hparams": 3}'),
    "config.json binary": lambda p: (p / "config.json").write_bytes(b"\xff\xfe\x00\x01"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's, on the foreign pickle
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_run_directory_is_one_line_naming_the_file(finished_run, tmp_path, capsys, damage):
    damaged = tmp_path / "erm"
    shutil.copytree(finished_run, damaged)
    DAMAGE[damage](damaged)
    err = refused(["infer-groups", "--from", str(damaged), "--out", str(tmp_path / "g.npz")], capsys)
    assert str(damaged) in err and "damaged" in err
    assert not (tmp_path / "g.npz").exists()


def test_groups_files_out_of_range_or_damaged_name_the_file_and_the_fix(finished_run, tmp_path, capsys):
    groups = tmp_path / "g.npz"
    ok(["infer-groups", "--from", str(finished_run), "--out", str(groups)], capsys)
    arrays = dict(np.load(groups))
    arrays["attribute"][0] = 7
    np.savez(groups, **arrays)
    train = ["train", "-d", "spurious-gaussian", "--data", "n=200", "--data", "n_val=100", "--data", "n_test=100",
             "-m", "groupdro", "--epochs", "1", "--groups", str(groups), "--out", str(tmp_path / "run"), "-q"]
    err = refused(train, capsys)
    assert str(groups) in err and "0..7" in err and "infer-groups" in err
    meta = json.loads(groups.with_suffix(".json").read_text())
    del meta["n_attrs"]
    groups.with_suffix(".json").write_text(json.dumps(meta))
    err = refused(train, capsys)
    assert "n_attrs" in err and "infer-groups" in err


def test_a_feature_split_with_no_rows_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 20), ("test", 0)):
        arrays |= {f"x_{split}": rng.normal(size=(n, 3)), f"y_{split}": rng.integers(0, 2, n),
                   f"a_{split}": rng.integers(0, 2, n)}
    np.savez(tmp_path / "f.npz", **arrays)
    err = refused(["train", "-d", "features", "--data", f"path={tmp_path / 'f.npz'}", "--epochs", "1", "--out",
                   str(tmp_path / "run"), "-q"], capsys)
    assert "x_test has no rows" in err


@pytest.mark.parametrize("option,value", [("--data", "n=1000000000000"), ("--set", "hidden=1000000000"),
                                          ("--set", "batch_size=1000000000000"), ("--data", "core_dims=100000000")])
def test_sizes_no_machine_can_allocate_are_refused_naming_the_bound(tmp_path, capsys, option, value):
    err = refused(["train", "-d", "spurious-gaussian", option, value, "--epochs", "1", "--out",
                   str(tmp_path / "run"), "-q"], capsys)
    name = value.split("=")[0]
    assert f"{name} <=" in err
    assert not (tmp_path / "run").exists()


def test_every_size_parameter_has_an_upper_bound():
    from grouprobust.data import list_datasets
    from grouprobust.params import TRAIN_PARAMS

    for name in ("hidden", "batch_size"):
        assert TRAIN_PARAMS[name].constraint.hi is not None, name
    sizes = 0
    for entry in list_datasets():
        for option, param in entry.option_params().items():
            if param.kind is int and (option in ("n", "n_val", "n_test", "copies", "n_features")
                                      or option.endswith("_dims")):
                sizes += 1
                assert param.constraint is not None and param.constraint.hi is not None, f"{entry.name}: {option}"
    assert sizes >= 9


API_MISUSE = [
    (lambda: resolve_config(123, "erm"), "dataset"),
    (lambda: resolve_config("spurious-gaussian", 5), "method"),
    (lambda: resolve_config("spurious-gaussian", "erm", hparams="lr=1"), "hparams"),
    (lambda: resolve_config("spurious-gaussian", "erm", data=[("n", 1)]), "data"),
    (lambda: resolve_config("spurious-gaussian", "erm", hparams={1: 2}), "hparams"),
    (lambda: run("erm"), "config"),
    (lambda: run(resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST), out=123), "out"),
    (lambda: run(resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST), splits=5), "splits"),
    (lambda: run(resolve_config("spurious-gaussian", "erm", data=TINY, hparams=FAST), on_epoch=5), "on_epoch"),
]


@pytest.mark.parametrize("call,subject", API_MISUSE)
def test_wrong_types_at_the_python_api_raise_group_robust_error_with_subject(call, subject):
    with pytest.raises(GroupRobustError) as info:
        call()
    assert info.value.subject == subject and len(str(info.value).splitlines()) == 1


# -- wrong messages -----------------------------------------------------------------------------------------

def test_a_failed_run_or_a_sweep_folder_given_as_a_run_says_what_it_is(sweep_dir, tmp_path, capsys):
    from grouprobust.trained import load_trained_run

    diverged = tmp_path / "div"
    with pytest.raises(GroupRobustError):
        run(resolve_config("spurious-gaussian", "erm", data=TINY, hparams={"lr": 1e30, "epochs": 2}), diverged)
    err = refused(["infer-groups", "--from", str(diverged), "--out", str(tmp_path / "g.npz")], capsys)
    assert "failed run" in err and "saved no model" not in err
    err = refused(["infer-groups", "--from", str(sweep_dir), "--out", str(tmp_path / "g.npz")], capsys)
    assert "sweep directory" in err and "runs" in err
    with pytest.raises(GroupRobustError, match="is a sweep directory, not a run"):
        load_trained_run(sweep_dir)


def test_a_folder_where_a_file_belongs_is_not_called_missing(tmp_path, capsys):
    (tmp_path / "t.csv").mkdir()
    err = refused(["train", "-d", "table", "--data", f"path={tmp_path / 't.csv'}", "--data", "label=y", "--data",
                   "attribute=a", "--out", str(tmp_path / "run"), "-q"], capsys)
    assert "is a folder" in err and "not found" not in err
    (tmp_path / "s.yaml").mkdir()
    err = refused(["sweep", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert "is a folder" in err and "not found" not in err


def test_alignment_with_a_huge_l2_names_l2_not_the_learning_rate(tmp_path, capsys):
    err = refused(["analyze", "alignment", "--l2", "1e308", "--seeds", "0", "--out", str(tmp_path / "al")], capsys)
    assert "l2" in err and "learning rate" not in err and "--l2" in err
    assert not (tmp_path / "al").exists()


def test_an_array_error_never_prints_the_array():
    from grouprobust.lastlayer import GSR

    with pytest.raises(GroupRobustError) as info:
        GSR().fit(np.arange(5000.0), np.zeros(5000, dtype=int))
    message = str(info.value)
    assert len(message) < 400 and "(5000,)" in message and "reshape" in message and "4999" not in message


# -- found beyond the audit ------------------------------------------------------------------------------

def test_a_symlink_loop_as_out_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    err = refused(["train", "-d", "spurious-gaussian", "--data", "n=200", "--epochs", "1", "--out", str(loop), "-q"],
                  capsys)
    assert str(loop) in err


def test_a_feature_file_holding_python_objects_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=[0, 1, 0, 1],
             x_val=np.zeros((2, 2)), y_val=[0, 1], x_test=np.zeros((2, 2)), y_test=[0, 1])
    err = refused(["train", "-d", "features", "--data", f"path={tmp_path / 'obj.npz'}", "--epochs", "1", "--out",
                   str(tmp_path / "run"), "-q"], capsys)
    assert "obj.npz" in err and "numeric arrays" in err


def test_a_damaged_history_leaves_only_its_figure_out_of_the_report(tmp_path, capsys):
    out = tmp_path / "sweep"
    run_sweep(write_spec(tmp_path / "s.yaml", methods=["groupdro"], seeds=[0, 1]), out)
    first = sorted(p for p in (out / "runs").iterdir() if not p.name.startswith("."))[0]
    with open(first / "history.jsonl", "a") as fh:
        fh.write("{broken\n")
    report, folder = write_report(out)
    assert int(report.summary["n_seeds"].iloc[0]) == 2 and (folder / "report.md").is_file()
