"""Bad values that could slip through or end in a traceback: each is one ``error:`` line (exit 2) on the
command line, or a `GroupRobustError` naming the problem from Python, and nothing is written.

Booleans given for numbers, repeated or empty entries in the analyze commands' comma lists, an infinite
cell in a table's numeric column, and a feature directory whose splits have different widths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_runner import cli
from grouprobust.analysis.runs import run_alignment, run_completeness, run_implicit_bias_experiment
from grouprobust.config import resolve_config
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.feature_store import load_feature_splits, save_feature_splits
from grouprobust.data.registry import resolve_dataset_options
from grouprobust.data.tabular import from_table
from grouprobust.errors import GroupRobustError
from grouprobust.params import Param, coerce


def _one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- booleans are not numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("kind, value", [(int, True), (int, False), (float, True), (float, False)])
def test_a_bool_is_refused_for_an_int_or_float_parameter(kind, value):
    param = Param(1 if kind is int else 1.0)
    with pytest.raises(GroupRobustError, match=f"^hyper-parameter p must be {kind.__name__}, got {value}$"):
        param.resolve("p", value)


def test_an_int_parameter_still_takes_whole_numbers_and_their_text():
    assert coerce(3, int, "epochs") == 3 and coerce(3.0, int, "epochs") == 3 and coerce("3", int, "epochs") == 3
    assert coerce(2, float, "lr") == 2.0 and coerce(True, bool, "amp") is True


@pytest.mark.parametrize("name", ["epochs", "batch_size", "lr"])
def test_resolve_config_refuses_a_bool_hyper_parameter_naming_it(name):
    with pytest.raises(GroupRobustError) as err:
        resolve_config("spurious-gaussian", "erm", seed=0, hparams={name: True})
    assert f"hyper-parameter {name} must be" in str(err.value) and "got True" in str(err.value)
    assert err.value.subject == f"hparam:{name}"


def test_a_bool_dataset_option_is_refused_naming_it():
    with pytest.raises(GroupRobustError) as err:
        resolve_dataset_options("spurious-gaussian", {"n": 200, "n_val": True})
    assert "dataset option n_val must be int, got True" in str(err.value) and err.value.subject == "data:n_val"


@pytest.mark.parametrize("body, expect", [
    ("set: {epochs: true}\nmethods: [erm]\n", "hyper-parameter epochs must be int, got True"),
    ("set: {epochs: 1}\nmethods: {erm: {grid: {batch_size: [true]}}}\n", "hyper-parameter batch_size must be int"),
    ("set: {epochs: 1}\nmethods: {erm: {grid: {lr: [true]}}}\n", "hyper-parameter lr must be float"),
])
def test_a_sweep_file_with_a_bool_hyper_parameter_is_refused_before_any_run(body, expect, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("datasets: {spurious-gaussian: {n: 200}}\n" + body)
    code, _, err = cli(["sweep", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "sw")], capsys)
    assert expect in _one_error_line(code, err)
    assert not (tmp_path / "sw").exists()


def test_a_sweep_file_with_a_bool_dataset_option_is_refused(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("datasets: {spurious-gaussian: {n: 200, n_val: true}}\nmethods: [erm]\n")
    code, _, err = cli(["sweep", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "sw"), "--dry-run"], capsys)
    line = _one_error_line(code, err)
    assert "datasets.spurious-gaussian" in line and "n_val must be int, got True" in line


# -- analyze: comma lists give each value once ----------------------------------------------------

IB = ["analyze", "implicit-bias", "--steps", "5"]


@pytest.mark.parametrize("argv, expect", [
    (IB + ["--seeds", "1,1"], "--seeds: lists a seed twice; list each seed once"),
    (IB + ["--l2", "1,1"], "--l2: lists a strength twice"),
    (IB + ["--l2", "0,0.0"], "--l2: lists a strength twice"),
    (IB + ["--losses", "ce,ce"], "--losses: lists a loss twice"),
    (IB + ["--seeds", "1,,2"], "--seeds '1,,2' has an empty entry"),
    (IB + ["--seeds", "1,2,"], "has an empty entry"),
    (IB + ["--seeds", ","], "--seeds is empty"),
    (["analyze", "alignment", "--seeds", "0,0"], "--seeds: lists a seed twice"),
    (["analyze", "alignment", "--methods", "erm,groupdro,erm"], "--methods: lists a method twice"),
    (["analyze", "completeness", "--methods", "erm,erm", "--seeds", "0,0"], "lists a"),
    (["analyze", "completeness", "--seeds", "0,0"], "--seeds: lists a seed twice"),
])
def test_analyze_refuses_repeated_or_empty_list_entries(argv, expect, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(argv + ["-o", str(out)], capsys)
    assert expect in _one_error_line(code, err)
    assert not out.exists()


@pytest.mark.parametrize("call, expect", [
    (lambda out: run_implicit_bias_experiment(out, seeds=[1, 1], steps=5), "seeds: lists a seed twice"),
    (lambda out: run_implicit_bias_experiment(out, l2=[0, 0.0], steps=5), "l2: lists a strength twice"),
    (lambda out: run_alignment(out, seeds=[0, 0]), "seeds: lists a seed twice"),
    (lambda out: run_completeness(out, methods=["erm", "erm"]), "methods: lists a method twice"),
])
def test_the_analysis_functions_refuse_a_repeated_value(call, expect, tmp_path):
    with pytest.raises(GroupRobustError, match=expect):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- a table with an infinite numeric cell --------------------------------------------------------

def _inf_table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    age = np.full(n, np.inf)
    age[0] = 30.0
    path = tmp_path / "tab_inf.csv"
    pd.DataFrame({"age": age, "income": rng.choice(["<=50K", ">50K"], n),
                  "sex": rng.choice(["Female", "Male"], n)}).to_csv(path, index=False)
    return path


def test_an_infinite_numeric_cell_is_refused_naming_the_column(tmp_path):
    frame = pd.DataFrame({"age": [30.0, -np.inf, 40.0, 50.0] * 25, "income": [0, 1] * 50, "sex": [0, 0, 1, 1] * 25})
    with pytest.raises(GroupRobustError) as err:
        from_table(frame, label="income", attribute="sex")
    assert "feature column 'age'" in str(err.value) and "25 infinite values" in str(err.value)
    assert err.value.subject == "data:path"


@pytest.mark.parametrize("command", [
    ["train", "-d", "table", "-q", "--epochs", "1", "-o", "{tmp}/tinf"],
    ["datasets", "--check", "table"],
])
def test_a_table_with_inf_is_one_error_line_naming_the_column_and_path(command, tmp_path, capsys):
    path = _inf_table(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    argv += ["--data", f"path={path}", "--data", "label=income", "--data", "attribute=sex"]
    code, _, err = cli(argv, capsys)
    line = _one_error_line(code, err)
    assert "'age'" in line and "299 infinite values" in line and "--data path" in line, line
    assert not (tmp_path / "tinf").exists()  # (a claimed run path keeps its empty hidden lock file beside it)


# -- a feature directory whose splits have different widths ---------------------------------------

def _feature_dir(tmp_path: Path, widths: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    parts = [GroupDataset(rng.normal(size=(16, widths[s])).astype(np.float32), np.arange(16) % 2,
                          (np.arange(16) // 2) % 2, 2, 2, s) for s in ("train", "val", "test")]
    return save_feature_splits(DatasetSplits(*parts, name="toy"), tmp_path / "feats")


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_feature_directory_with_a_narrower_split_is_refused_when_read(split, tmp_path):
    widths = {"train": 24, "val": 24, "test": 24, split: 10}
    directory = _feature_dir(tmp_path, widths)
    with pytest.raises(GroupRobustError) as err:
        load_feature_splits(directory)
    assert f"{directory / f'{split}.npz'} has 10 features but train.npz has 24 features" in str(err.value)
    assert "extract the features again" in str(err.value)


def test_a_feature_directory_with_equal_widths_still_loads(tmp_path):
    splits = load_feature_splits(_feature_dir(tmp_path, {"train": 6, "val": 6, "test": 6}))
    assert [ds.x.shape[1] for ds in splits] == [6, 6, 6]


def test_training_on_mismatched_features_is_one_error_line(tmp_path, capsys):
    directory = _feature_dir(tmp_path, {"train": 24, "val": 10, "test": 24})
    before = sorted(p.name for p in directory.iterdir())
    code, _, err = cli(["train", "-d", "features", "--data", f"path={directory}", "-o", str(tmp_path / "r"), "-q",
                        "--epochs", "1"], capsys)
    line = _one_error_line(code, err)
    assert "val.npz has 10 features but train.npz has 24" in line and "mat1" not in line
    assert not (tmp_path / "r").exists() and sorted(p.name for p in directory.iterdir()) == before


def test_numpy_scalars_are_read_as_their_python_values():
    import numpy as np

    from grouprobust.params import coerce

    assert coerce(np.int64(3), int, "epochs") == 3 and type(coerce(np.int64(3), int, "epochs")) is int
    assert type(coerce(np.float32(0.5), float, "lr")) is float
    with pytest.raises(GroupRobustError, match="epochs must be int, got True"):
        coerce(np.bool_(True), int, "epochs")


def test_implicit_bias_from_python_refuses_a_bool_step_count(tmp_path):
    with pytest.raises(GroupRobustError, match="option steps must be int, got True"):
        run_implicit_bias_experiment(tmp_path / "ib", steps=True)
    assert not (tmp_path / "ib").exists()
