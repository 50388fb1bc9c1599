"""Sweep files: expansion into trials, random draws, and one-line errors for bad files."""

from pathlib import Path

import pytest
import yaml

from grouprobust.cli import main
from grouprobust.errors import GroupRobustError
from grouprobust.config import sample_hparams
from grouprobust.params import TRAIN_PARAMS
from grouprobust.methods.registry import get_method
from grouprobust.sweep import expand, load_sweep

TINY = {"n": 200, "n_val": 100, "n_test": 100}


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path, data, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


def test_grid_times_seeds_gives_every_trial_once(tmp_path):
    path = write(tmp_path, {"seeds": 3, "set": {"epochs": 2}, "datasets": {"spurious-gaussian": TINY},
                            "methods": {"erm": {"grid": {"lr": [0.001, 0.01], "weight_decay": [0.0, 0.001, 0.001]}}}})
    trials = expand(load_sweep(path))
    # lr 2 x weight_decay 2 distinct (0.001 listed twice) x seeds 3
    assert len(trials) == 12
    assert len({t.run_id for t in trials}) == 12
    points = {(t.config.hparams["lr"], t.config.hparams["weight_decay"]) for t in trials}
    assert points == {(0.001, 0.0), (0.001, 0.001), (0.01, 0.0), (0.01, 0.001)}
    assert sorted({t.config.seed for t in trials}) == [0, 1, 2]
    assert all(t.config.hparams["epochs"] == 2 and t.config.data["n"] == 200 for t in trials)


def test_toml_file_expands_like_yaml(tmp_path):
    toml = write(tmp_path, 'seeds = [0, 1]\n[set]\nepochs = 2\n[datasets.spurious-gaussian]\nn = 200\n'
                 '[methods.erm.grid]\nlr = [0.001, 0.01]\n', "sweep.toml")
    yml = write(tmp_path, {"seeds": [0, 1], "set": {"epochs": 2}, "datasets": {"spurious-gaussian": {"n": 200}},
                           "methods": {"erm": {"grid": {"lr": [0.001, 0.01]}}}})
    assert [t.run_id for t in expand(load_sweep(toml))] == [t.run_id for t in expand(load_sweep(yml))]


def test_random_draws_come_from_registry_seeded_per_trial(tmp_path):
    spec = {"seed": 7, "seeds": [0, 1], "set": {"epochs": 2}, "datasets": {"spurious-gaussian": TINY},
            "methods": {"erm": {"random": {"count": 3, "params": ["lr", "weight_decay"]}}}}
    trials = expand(load_sweep(write(tmp_path, spec)))
    assert len(trials) == 6
    erm = get_method("erm")
    for j in range(3):
        expected = sample_hparams(erm, 7, j, ["lr", "weight_decay"])
        same = [t for t in trials if t.point.endswith(f"r{j}")]
        assert [t.config.seed for t in same] == [0, 1]  # one draw shared by every seed
        assert all(t.config.hparams["lr"] == expected["lr"] for t in same)
        assert all(t.config.hparams["weight_decay"] == expected["weight_decay"] for t in same)
        lo, hi = TRAIN_PARAMS["lr"].search[1:]
        assert lo <= expected["lr"] <= hi
    assert len({t.config.hparams["lr"] for t in trials}) == 3
    spec["seed"] = 8
    other = expand(load_sweep(write(tmp_path, spec, "other.yaml")))
    assert {t.config.hparams["lr"] for t in other}.isdisjoint({t.config.hparams["lr"] for t in trials})


BAD = [
    ("datasets:\n  spurious-gaussian: {n: 200\nmethods: [erm]\n", "not valid YAML"),
    ({"dataset": {"spurious-gaussian": {}}, "methods": ["erm"]}, "dataset: unknown key"),
    ({"datasets": {"spurios-gaussian": {}}, "methods": ["erm"]}, "datasets.spurios-gaussian: unknown dataset"),
    ({"datasets": {"spurious-gaussian": {"size": 3}}, "methods": ["erm"]}, "datasets.spurious-gaussian"),
    ({"datasets": ["spurious-gaussian"], "methods": ["ermm"]}, "methods.ermm: unknown method"),
    ({"datasets": ["spurious-gaussian"], "methods": {"erm": {"grid": {"lr": 0.1}}}}, "methods.erm.grid.lr: must be a non-empty list"),
    ({"datasets": ["spurious-gaussian"], "methods": {"erm": {"grid": {"learning_rate": [0.1]}}}}, "unknown hyper-parameter 'learning_rate'"),
    ({"datasets": ["spurious-gaussian"], "methods": {"erm": {"random": {"count": 2, "params": ["lrr"]}}}}, "methods.erm.random.params"),
    ({"datasets": ["spurious-gaussian"], "methods": {"erm": {"grid": {"lr": [0.1, -1.0]}}}}, "lr > 0"),
    ({"datasets": ["spurious-gaussian"], "methods": ["erm"], "seeds": 0}, "seeds: must be an integer >= 1"),
    ({"datasets": ["spurious-gaussian"], "methods": ["erm"], "regime": "some"}, "regime: unknown label regime"),
    ({"datasets": ["spurious-gaussian"], "methods": ["erm"], "regime": "none", "select": "val_worst_group_acc"},
     "needs validation group labels"),
    ({"methods": ["erm"]}, "datasets: missing or empty"),
]


@pytest.mark.parametrize("content,expected", BAD)
def test_bad_sweep_file_is_one_line_error_and_runs_nothing(tmp_path, capsys, content, expected):
    path = write(tmp_path, content)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(path), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and expected in err
    assert not out.exists()


def test_missing_file_and_bad_executor(tmp_path, capsys):
    with pytest.raises(GroupRobustError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    from grouprobust.sweep.executors import make_executor

    with pytest.raises(GroupRobustError, match="executor ray") as err:
        make_executor("local", workers=2)
    assert err.value.subject == "executor"
    # the command line names the flag that chooses the executor
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(EXAMPLES / "sweep-toy.yaml"), "--out", str(tmp_path / "out"), "--workers", "2"])
    err_text = capsys.readouterr().err
    assert exit_info.value.code == 2 and "executor ray" in err_text and "--executor" in err_text
    assert not (tmp_path / "out").exists()
    with pytest.raises(GroupRobustError, match="unknown executor"):
        make_executor("dask")


def test_unreachable_ray_address_fails_fast_without_starting_ray(tmp_path):
    import socket

    from grouprobust.sweep.executors import RayExecutor

    pytest.importorskip("ray")
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GroupRobustError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        RayExecutor(address=f"127.0.0.1:{port}")
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("name,count", [("sweep-toy.yaml", 12), ("sweep-random.toml", 12)])
def test_example_sweep_files_are_valid(name, count):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / name
    assert len(expand(load_sweep(path))) == count
