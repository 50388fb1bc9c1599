"""Run ids hash the contents of a dataset's input files, not their paths (docs/reliability.md).

Editing a table or re-extracting features into the same path gives a new run id, so `train` and
sweeps never hand back a stale finished run; touching a file without changing its bytes, and every
embedded dataset's run id, stay exactly as before.
"""

import json
import os

import numpy as np
import pytest
import yaml

from cli_runner import cli
from grouprobust.config import RunConfig, resolve_config
from grouprobust.data.fingerprint import fingerprint_path
from grouprobust.sweep import run_sweep, write_report
from grouprobust.sweep.store import runs_dir
from grouprobust.two_stage import stage1_config
from table_fixtures import census_frame

TABLE = {"label": "income", "attribute": "sex"}
FAST = ["--epochs", "1", "-q", "--set", "batch_size=128"]


def write_table(path, n=200):
    census_frame(n, seed=1).to_csv(path, index=False)
    return path


def edit_one_row(path):
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace("Female", "Male") if "Female" in lines[1] else lines[1].replace("Male", "Female")
    path.write_text("".join(lines))


def table_args(csv):
    return ["--dataset", "table", "--data", f"path={csv}", "--data", "label=income", "--data", "attribute=sex"]


def run_id_of(run_dir):
    return json.loads((run_dir / "config.json").read_text())["run_id"]


# -- run ids ------------------------------------------------------------------------------------------

def test_embedded_run_ids_are_unchanged():
    # Pins backwards compatibility: these ids were computed on main before input fingerprints existed;
    # sweeps resumed from then must still find their runs.
    config = resolve_config("colored-digits", "erm", 0, {"conflict": 0.01}, {"epochs": 2})
    assert config.inputs == {}
    assert config.run_id == "4357ca945e59"
    assert resolve_config("colored-digits", "groupdro", 3).run_id == "8b444a194a39"
    stored = {k: v for k, v in config.to_dict().items() if k != "inputs"}  # a config.json written before
    assert RunConfig.from_dict(stored).run_id == "4357ca945e59"


def test_editing_a_table_changes_the_run_id_touching_it_does_not(tmp_path):
    csv = write_table(tmp_path / "t.csv")
    first = resolve_config("table", "erm", data={"path": str(csv), **TABLE})
    assert first.inputs["path"].startswith("sha256:") and len(first.inputs["path"]) == 7 + 64
    assert RunConfig.from_dict(json.loads(json.dumps(first.to_dict()))).run_id == first.run_id

    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns + 10**9, stat.st_mtime_ns + 10**9))
    assert resolve_config("table", "erm", data={"path": str(csv), **TABLE}).run_id == first.run_id

    edit_one_row(csv)
    edited = resolve_config("table", "erm", data={"path": str(csv), **TABLE})
    assert edited.run_id != first.run_id and edited.inputs != first.inputs
    assert stage1_config(edited).inputs == edited.inputs  # a two-stage method's stage 1 trains on the same file


def test_directory_fingerprint_covers_names_and_contents_not_hidden_files(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    (folder / "a.npy").write_bytes(b"one")
    (folder / "b.npy").write_bytes(b"two")
    base = fingerprint_path(folder)
    (folder / ".lock").write_text("")
    (folder / ".tmp-x").mkdir()
    (folder / ".tmp-x" / "a.npy").write_bytes(b"partial")
    assert fingerprint_path(folder) == base
    (folder / "b.npy").write_bytes(b"TWO")
    assert fingerprint_path(folder) != base
    (folder / "b.npy").write_bytes(b"two")
    assert fingerprint_path(folder) == base
    (folder / "b.npy").rename(folder / "c.npy")
    assert fingerprint_path(folder) != base
    assert fingerprint_path(tmp_path / "missing") is None


def test_a_missing_table_keeps_its_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert resolve_config("table", "erm", data={"path": str(missing), **TABLE}).inputs == {}
    code, out, err = cli(["train", *table_args(missing), *FAST, "--out", str(tmp_path / "run")], capsys, squash=True)
    assert code != 0
    assert "not found" in err and "Traceback" not in err + out and "sha256" not in err


# -- end to end ---------------------------------------------------------------------------------------

def test_train_after_editing_the_table_is_a_new_run(tmp_path, capsys):
    csv = write_table(tmp_path / "census.csv")
    first_dir = tmp_path / "first"
    code, out, err = cli(["train", *table_args(csv), *FAST, "--out", str(first_dir)], capsys)
    assert code == 0, err
    first_id = run_id_of(first_dir)

    code, out, err = cli(["train", *table_args(csv), *FAST, "--out", str(first_dir)], capsys, squash=True)
    assert code == 0, err
    assert "already holds this finished run" in out  # unchanged: reused as before

    edit_one_row(csv)
    code, out, err = cli(["train", *table_args(csv), *FAST, "--out", str(first_dir)], capsys, squash=True)
    assert code != 0 and "already holds this finished run" not in out  # never the stale result
    assert "different run" in err and "contents of data:path changed" in err

    second_dir = tmp_path / "second"
    code, out, err = cli(["train", *table_args(csv), *FAST, "--out", str(second_dir)], capsys, squash=True)
    assert code == 0, err
    assert "already holds" not in out
    assert run_id_of(second_dir) != first_id
    stored = json.loads((second_dir / "config.json").read_text())
    assert stored["inputs"]["path"] == fingerprint_path(csv)


def _feature_arrays(seed):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        out[f"x_{split}"] = rng.standard_normal((n, 4)).astype(np.float32)
        out[f"y_{split}"] = np.arange(n) % 2
        out[f"a_{split}"] = (np.arange(n) // 2) % 2
    return out


@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
def test_train_on_re_extracted_features_is_a_new_run(kind, tmp_path, capsys):
    path = tmp_path / ("f.npz" if kind == "npz" else "feats")

    def write(seed):
        arrays = _feature_arrays(seed)
        if kind == "npz":
            np.savez(path, **arrays)
            return
        path.mkdir(exist_ok=True)
        for k, v in arrays.items():
            np.save(path / f"{k}.npy", v)

    write(0)
    args = ["train", "--dataset", "features", "--data", f"path={path}", *FAST]
    code, _, err = cli([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    code, out, err = cli([*args, "--out", str(tmp_path / "a")], capsys, squash=True)
    assert code == 0 and "already holds this finished run" in out

    write(1)  # re-extracted into the same path
    code, out, err = cli([*args, "--out", str(tmp_path / "a")], capsys, squash=True)
    assert code != 0 and "contents of data:path changed" in err
    code, out, err = cli([*args, "--out", str(tmp_path / "b")], capsys, squash=True)
    assert code == 0 and "already holds" not in out, err
    assert run_id_of(tmp_path / "b") != run_id_of(tmp_path / "a")


def test_sweep_resumes_unchanged_trials_and_reruns_after_an_edit(tmp_path):
    csv = write_table(tmp_path / "census.csv")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"seeds": [0, 1], "set": {"epochs": 1, "batch_size": 128},
                                    "datasets": {"table": {"path": str(csv), **TABLE}}, "methods": {"erm": {}}}))
    out = tmp_path / "sweep"
    first = run_sweep(spec, out)
    assert first.finished == 2
    first_ids = {o["run_id"] for o in first.outcomes}

    again = run_sweep(spec, out)
    assert again.outcomes == [] and again.skipped_finished == 2

    edit_one_row(csv)
    edited = run_sweep(spec, out)  # the same sweep on the edited table: not refused as another sweep
    assert edited.finished == 2 and edited.skipped_finished == 0
    new_ids = {o["run_id"] for o in edited.outcomes}
    assert not new_ids & first_ids
    manifest = json.loads((out / "sweep.json").read_text())
    assert {t["run_id"] for t in manifest["trials"]} == new_ids
    assert all(t["inputs"]["path"] == fingerprint_path(csv) for t in manifest["trials"])
    assert {p.name for p in runs_dir(out).iterdir() if not p.name.startswith(".")} == first_ids | new_ids

    report, _ = write_report(out, plots=False)  # runs on either content are their own rows, never pooled
    assert sorted(report.summary["n_seeds"]) == [2, 2]
    assert report.summary["dataset"].nunique() == 2
    assert run_sweep(spec, out).skipped_finished == 2


def test_a_files_sidecar_names_are_part_of_its_fingerprint(tmp_path):
    feats = tmp_path / "f[1].npz"  # glob characters in the name are taken literally
    feats.write_bytes(b"arrays")
    alone = fingerprint_path(feats)
    (tmp_path / "f1.npz.names.json").write_text("{}")  # not this file's sidecar
    assert fingerprint_path(feats) == alone
    names = tmp_path / "f[1].npz.names.json"
    names.write_text('{"class_names": ["a", "b"]}')
    with_names = fingerprint_path(feats)
    assert with_names != alone
    names.write_text('{"class_names": ["b", "a"]}')
    assert fingerprint_path(feats) not in (alone, with_names)


def test_file_valued_hyper_parameters_are_fingerprinted_too(tmp_path):
    from grouprobust import trained
    from grouprobust.config import FILE_HPARAMS

    assert FILE_HPARAMS["stage1"] == trained.MODEL_FILE  # the name repeated below the trained layer
    groups = tmp_path / "groups.npz"
    groups.write_bytes(b"first inference")
    hp = {"epochs": 1, "train_groups": str(groups)}
    first = resolve_config("spurious-gaussian", "groupdro", 0, {"n": 200}, hp, "val")
    assert first.inputs["hparam:train_groups"].startswith("sha256:")
    groups.write_bytes(b"second inference")
    assert resolve_config("spurious-gaussian", "groupdro", 0, {"n": 200}, hp, "val").run_id != first.run_id

    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    (stage1 / trained.MODEL_FILE).write_bytes(b"weights a")
    gsr = resolve_config("spurious-gaussian", "gsr", 0, {"n": 200}, {"stage1": str(stage1)})
    (stage1 / "history.jsonl").write_text("{}\n")  # only the model file counts for a reused stage 1
    assert resolve_config("spurious-gaussian", "gsr", 0, {"n": 200}, {"stage1": str(stage1)}).run_id == gsr.run_id
    (stage1 / trained.MODEL_FILE).write_bytes(b"weights b")
    assert resolve_config("spurious-gaussian", "gsr", 0, {"n": 200}, {"stage1": str(stage1)}).run_id != gsr.run_id
    assert not any(k.startswith("hparam:") for k in stage1_config(gsr).inputs)
    # a missing file is left to the method's own message
    missing = resolve_config("spurious-gaussian", "groupdro", 0, {"n": 200},
                             {"epochs": 1, "train_groups": str(tmp_path / "nope.npz")}, "val")
    assert "hparam:train_groups" not in missing.inputs


def test_a_run_whose_table_changed_since_it_trained_is_not_loaded(tmp_path, capsys):
    from grouprobust.errors import GroupRobustError
    from grouprobust.trained import load_trained_run

    csv = write_table(tmp_path / "census.csv")
    run_dir = tmp_path / "run"
    code, _, err = cli(["train", *table_args(csv), *FAST, "--out", str(run_dir)], capsys)
    assert code == 0, err
    assert load_trained_run(run_dir).config.inputs["path"] == fingerprint_path(csv)
    edit_one_row(csv)
    with pytest.raises(GroupRobustError, match="trained on table path=.*with other contents") as refused:
        load_trained_run(run_dir, subject="from")
    assert refused.value.subject == "from" and len(str(refused.value).splitlines()) == 1
    code, _, err = cli(["infer-groups", "--from", str(run_dir), "--method", "errors", "--out",
                        str(tmp_path / "groups.npz")], capsys, squash=True)
    assert code == 2 and "with other contents" in err and not (tmp_path / "groups.npz").exists()
