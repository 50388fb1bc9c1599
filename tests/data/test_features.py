"""Feature extraction from a run's model (disk cache and its keying) and a user's own feature files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.data.feature_files import load_user_features
from grouprobust.trained import load_trained_run, run_features
from grouprobust.errors import GroupRobustError
from grouprobust.runs import run

SMALL = {"n": 300, "n_val": 120, "n_test": 120}


@pytest.fixture(scope="module")
def erm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "erm"
    run(resolve_config("spurious-gaussian", "erm", 0, SMALL, {"epochs": "2", "hidden": "16"}, "none"), out)
    return out


def test_extraction_matches_the_model_and_is_cached(erm_run, tmp_path):
    cache = tmp_path / "cache"
    feats, info = run_features(erm_run, cache=cache)
    assert info["misses"] == ["train", "val", "test"] and info["hits"] == []
    trained = load_trained_run(erm_run)
    model, splits = trained.model, trained.splits
    with torch.no_grad():
        expected = model.features(torch.as_tensor(splits.val.x)).numpy()
    np.testing.assert_allclose(feats.val.x, expected, rtol=1e-5, atol=1e-6)
    assert feats.val.x.shape == (120, 16)
    np.testing.assert_array_equal(feats.test.g, splits.test.g)  # labels and groups carried over
    again, info2 = run_features(erm_run, cache=cache)
    assert info2["hits"] == ["train", "val", "test"] and info2["misses"] == [] and info2["key"] == info["key"]
    np.testing.assert_array_equal(again.train.x, feats.train.x)
    # one split lost from the cache: only that one is computed again
    (cache / info["key"] / "val.npz").unlink()
    _, info3 = run_features(erm_run, cache=cache)
    assert info3["misses"] == ["val"] and info3["hits"] == ["train", "test"]


def test_cache_key_changes_with_the_weights_and_the_data(erm_run, tmp_path):
    cache = tmp_path / "cache"
    _, base = run_features(erm_run, cache=cache)
    other_weights = tmp_path / "other"
    shutil.copytree(erm_run, other_weights)
    state = torch.load(other_weights / "model.pt")
    state["features.1.bias"] += 1.0
    torch.save(state, other_weights / "model.pt")
    feats, changed = run_features(other_weights, cache=cache)
    assert changed["key"] != base["key"] and changed["misses"] == ["train", "val", "test"]
    other_data = tmp_path / "runs"
    run(resolve_config("spurious-gaussian", "erm", 0, {**SMALL, "p": 0.8}, {"epochs": "2", "hidden": "16"}, "none"),
        other_data)
    _, data_changed = run_features(other_data, cache=cache)
    assert data_changed["key"] not in (base["key"], changed["key"])


def test_run_without_model_is_one_line_error(erm_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(erm_run, broken)
    (broken / "model.pt").unlink()
    with pytest.raises(GroupRobustError, match="model.pt not found"):
        run_features(broken, cache=tmp_path / "c")
    with pytest.raises(GroupRobustError, match="not found"):
        run_features(tmp_path / "missing", cache=tmp_path / "c")


def _arrays(rng, d=4, groups=True):
    out = {}
    for split, n in (("train", 30), ("val", 20), ("test", 10)):
        out[f"x_{split}"] = rng.standard_normal((n, d)).astype(np.float32)
        out[f"y_{split}"] = np.arange(n) % 2
        if groups:
            out[f"a_{split}"] = (np.arange(n) // 2) % 3
    return out


@pytest.mark.parametrize("kind", ["npz", "pt", "npy-dir", "parquet"])
def test_user_feature_files_load(kind, tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    if kind == "npz":
        path = tmp_path / "f.npz"
        np.savez(path, **arrays)
    elif kind == "pt":
        path = tmp_path / "f.pt"
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    elif kind == "npy-dir":
        path = tmp_path / "dir"
        path.mkdir()
        for k, v in arrays.items():
            np.save(path / f"{k}.npy", v)
    else:
        pytest.importorskip("pyarrow")
        path = tmp_path / "f.parquet"
        frames = []
        for split in ("train", "val", "test"):
            frame = pd.DataFrame(arrays[f"x_{split}"], columns=[f"f{j}" for j in range(4)])
            frame.insert(0, "split", split)
            frame["y"], frame["a"] = arrays[f"y_{split}"], arrays[f"a_{split}"]
            frames.append(frame)
        pd.concat(frames).to_parquet(path)
    splits = load_user_features(path)
    np.testing.assert_allclose(splits.val.x, arrays["x_val"])
    np.testing.assert_array_equal(splits.test.y, arrays["y_test"])
    assert splits.train.n_classes == 2 and splits.train.n_attrs == 3
    np.testing.assert_array_equal(splits.train.g, arrays["y_train"] * 3 + arrays["a_train"])
    # the same file through the registered dataset
    via_registry = load_dataset("features", 0, path=str(path))
    np.testing.assert_array_equal(via_registry.train.x, splits.train.x)


def test_user_features_without_groups_and_with_group_ids(tmp_path):
    arrays = _arrays(np.random.default_rng(1), groups=False)
    np.savez(tmp_path / "plain.npz", **arrays)
    assert not load_user_features(tmp_path / "plain.npz").val.has_groups
    with_g = {**arrays, **{f"g_{s}": np.arange(len(arrays[f"y_{s}"])) % 4 for s in ("train", "val", "test")}}
    np.savez(tmp_path / "g.npz", **with_g)
    splits = load_user_features(tmp_path / "g.npz")
    np.testing.assert_array_equal(splits.val.g, with_g["g_val"])
    assert splits.val.n_groups == 4


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("y_val"), "missing array 'y_val'"),
    (lambda a: a.__setitem__("x_test", np.zeros((10, 2, 2), np.float32)), r"x_test must have shape \(n, d\)"),
    (lambda a: a.__setitem__("x_test", np.zeros((10, 5), np.float32)), "feature dimensions differ"),
    (lambda a: a["x_train"].__setitem__((3, 1), np.nan), "NaN"),
    (lambda a: a.__setitem__("y_train", np.zeros(29, np.int64)), "x has 30 samples but y has 29"),
])
def test_bad_user_arrays_are_one_line_errors(mutate, message, tmp_path):
    arrays = _arrays(np.random.default_rng(2))
    mutate(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(GroupRobustError, match=message) as err:
        load_user_features(tmp_path / "bad.npz")
    assert "\n" not in str(err.value)


def test_bad_user_files_are_one_line_errors(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    with pytest.raises(GroupRobustError, match="single .npy file holds one array"):
        load_user_features(tmp_path / "one.npy")
    (tmp_path / "f.csv").write_text("x\n")
    with pytest.raises(GroupRobustError, match="unsupported feature file type"):
        load_user_features(tmp_path / "f.csv")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(GroupRobustError, match="not a dict"):
        load_user_features(tmp_path / "list.pt")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"split": ["train", "val", "test"], "f0": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "noy.parquet")
    with pytest.raises(GroupRobustError, match="missing column 'y'"):
        load_user_features(tmp_path / "noy.parquet")
    frame.assign(y=[0, 1, 0], note=["a", "b", "c"]).to_parquet(tmp_path / "text.parquet")
    with pytest.raises(GroupRobustError, match="feature column 'note' is not numeric"):
        load_user_features(tmp_path / "text.parquet")
    frame.assign(y=[0, 1, 0], split=["train", "valid", "test"]).to_parquet(tmp_path / "split.parquet")
    with pytest.raises(GroupRobustError, match="'valid'"):
        load_user_features(tmp_path / "split.parquet")
    with pytest.raises(GroupRobustError, match="needs a file"):
        load_dataset("features", 0)
