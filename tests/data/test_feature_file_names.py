"""User feature files keep class and attribute names when the file carries them."""

import json

import numpy as np
import pandas as pd
import pytest

from grouprobust.data.feature_files import load_user_features
from grouprobust.errors import GroupRobustError


def _rows(rng, n=12):
    return [{"split": s, "y": ["cat", "dog"][i % 2], "a": ["indoor", "outdoor"][(i // 2) % 2],
             "f0": rng.normal(), "f1": rng.normal()} for s in ("train", "val", "test") for i in range(n)]


def test_parquet_text_and_categorical_columns_name_the_groups(tmp_path):
    frame = pd.DataFrame(_rows(np.random.default_rng(0)))
    frame.to_parquet(tmp_path / "text.parquet")
    splits = load_user_features(tmp_path / "text.parquet")
    assert splits.train.group_names == ["cat,indoor", "cat,outdoor", "dog,indoor", "dog,outdoor"]
    np.testing.assert_array_equal(splits.train.y, (frame[frame.split == "train"].y == "dog").astype(int))
    # a categorical keeps its own order (dog first), not the sorted one
    frame["y"] = pd.Categorical(frame["y"], categories=["dog", "cat"])
    frame.to_parquet(tmp_path / "cat.parquet")
    ordered = load_user_features(tmp_path / "cat.parquet")
    assert ordered.train.group_names[0] == "dog,indoor"
    np.testing.assert_array_equal(ordered.train.y, 1 - splits.train.y)


def test_names_json_beside_arrays(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays.update({f"x_{s}": rng.normal(size=(8, 3)), f"y_{s}": np.arange(8) % 2, f"a_{s}": (np.arange(8) // 2) % 2})
    folder = tmp_path / "npy"
    folder.mkdir()
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    (folder / "names.json").write_text(json.dumps({"class_names": ["landbird", "waterbird"],
                                                   "attr_names": ["land", "water"]}))
    assert load_user_features(folder).val.group_names == ["landbird,land", "landbird,water", "waterbird,land",
                                                          "waterbird,water"]
    np.savez(tmp_path / "f.npz", **arrays)
    assert load_user_features(tmp_path / "f.npz").train.group_names[0] == "y=0,a=0"  # no names file: defaults
    (tmp_path / "f.npz.names.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    with pytest.raises(GroupRobustError, match="3 class names for 2 values"):
        load_user_features(tmp_path / "f.npz")
