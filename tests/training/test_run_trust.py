"""What a run says about its own numbers and its data: 95% intervals, small-group warnings, the split column,
class and attribute names, repeated --track, groups files matched on the rows they label."""

import json

import numpy as np
import pytest

from cli_runner import cli
from grouprobust import resolve_config, run
from grouprobust.data.tabular import from_table
from grouprobust.errors import GroupRobustError
from grouprobust.group_inference import infer_groups
from grouprobust.intervals import add_intervals, small_group_warnings, wilson_interval
from grouprobust.tracking import parse_track
from grouprobust.trained import load_trained_run
from table_fixtures import census_frame


def test_wilson_interval_matches_its_closed_form_and_stays_in_the_unit_interval():
    lo, hi = wilson_interval(2 / 5, 5)
    assert (lo, hi) == pytest.approx((0.1176, 0.7693), abs=1e-4)  # 2 of 5 right
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0.5, 0) is None
    narrow, wide = wilson_interval(0.5, 1000), wilson_interval(0.5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_worst_group_interval_is_that_of_the_worst_group_smallest_on_ties():
    m = {"per_group": {"0": {"name": "a", "acc": 0.5, "n": 400}, "1": {"name": "b", "acc": 0.5, "n": 4},
                       "2": {"name": "c", "acc": 0.9, "n": 50}}, "per_class": None}
    add_intervals(m)
    assert m["worst_group_acc_ci95"] == pytest.approx(list(wilson_interval(0.5, 4)))
    assert all(len(e["ci95"]) == 2 for e in m["per_group"].values()) and m["worst_class_acc_ci95"] is None


def test_small_group_warning_names_the_groups_used_for_selection_and_fitting():
    metrics = {"val": {"per_group": {"0": {"name": "big", "n": 500}, "1": {"name": "tiny", "n": 5}}},
               "test": {"per_group": {"0": {"name": "tinytest", "n": 3}}},
               "target": {"per_group": {"0": {"name": "fit", "n": 7}}}}
    lines = small_group_warnings(metrics)
    assert len(lines) == 2 and "tiny (5)" in lines[0] and "fit (7)" in lines[1] and "tinytest" not in " ".join(lines)
    assert small_group_warnings({"val": {"per_group": {"0": {"name": "big", "n": 500}}}}) == []


@pytest.fixture(scope="module")
def census_split(tmp_path_factory):
    """A census-like table with a ``split`` column (60/20/20, fixed) and a few rows of a rare attribute value."""
    frame = census_frame(900, seed=2)
    frame.loc[frame.index[:40], "sex"] = "Other"
    frame["split"] = np.resize(["train", "train", "train", "val", "test"], len(frame))
    path = tmp_path_factory.mktemp("split") / "census.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_split_column_is_the_split_and_not_a_feature_unless_told(census_split):
    splits = from_table(census_split, label="income", attribute="sex")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (540, 180, 180)
    assert not any("split" in name for name in splits.meta["feature_names"])
    assert "column 'split'" in splits.meta["split_note"]
    drawn = from_table(census_split, label="income", attribute="sex", split="none")
    assert drawn.meta["split_note"] == "" and any("split" in name for name in drawn.meta["feature_names"])
    assert not np.array_equal(drawn.train.y, splits.train.y)  # rows drawn at random, not the column's


def test_result_json_carries_intervals_warnings_notes_and_names(census_split, tmp_path):
    data = {"path": str(census_split), "label": "income", "attribute": "sex"}
    run(resolve_config("table", "erm", 0, data, {"epochs": 1}), out=tmp_path / "r")
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    test = result["metrics"]["test"]
    assert all(len(entry["ci95"]) == 2 for entry in test["per_group"].values())
    lo, hi = test["worst_group_acc_ci95"]
    assert lo <= test["worst_group_acc"] <= hi
    assert [e["name"] for e in test["per_class"].values()] == ["income=<=50K", "income=>50K"]
    assert [e["name"] for e in test["per_attr"].values()] == ["sex=Female", "sex=Male", "sex=Other"]
    assert any("sex=Other" in line for line in result["warnings"])  # a handful of validation rows
    assert result["notes"] and "column 'split'" in result["notes"][0]


def test_repeated_track_options_add_up(tmp_path, capsys):
    assert parse_track(["mlflow", "tensorboard"]) == ["mlflow", "tensorboard"]
    assert parse_track(["mlflow,tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]
    # The first of two --track options is read, not dropped: an unknown first tracker is refused.
    code, _, err = cli(["train", "-d", "spurious-gaussian", "-o", str(tmp_path / "r"), "--track", "wandb",
                        "--track", "tensorboard"], capsys, squash=True)
    assert code == 2 and "unknown tracker 'wandb'" in err


def test_groups_file_matches_the_rows_it_labels_not_the_seed(census_split, tmp_path):
    data = {"path": str(census_split), "label": "income", "attribute": "sex"}
    run(resolve_config("table", "erm", 0, data, {"epochs": 1}), out=tmp_path / "ref")
    path = infer_groups("errors", load_trained_run(tmp_path / "ref")).save(tmp_path / "g.npz")
    # The split column fixes the rows: another seed reads the same training split, and the file applies.
    other_seed = run(resolve_config("table", "groupdro", 1, data, {"epochs": 1, "train_groups": str(path)}, "val"))
    assert other_seed["method_info"]["group_inference"]["method"] == "errors"
    # Other rows (the splits drawn at random instead): refused, in one line naming the row counts.
    drawn = {**data, "split": "none"}
    with pytest.raises(GroupRobustError, match="label another training split") as err:
        run(resolve_config("table", "groupdro", 0, drawn, {"epochs": 1, "train_groups": str(path)}, "val"))
    assert "\n" not in str(err.value)
