"""The `table` dataset / `from_table`: names from the values, train-only encoding, one-line errors."""

import numpy as np
import pytest

from grouprobust.cli import main
from grouprobust.data import load_dataset
from grouprobust.data.tabular import from_table
from grouprobust.errors import GroupRobustError
from table_fixtures import census_frame


@pytest.fixture(scope="module")
def census():
    return census_frame()


def test_groups_are_named_from_the_values_and_counted_per_split(census):
    splits = from_table(census, label="income", attribute="sex", seed=0)
    assert splits.train.group_names == ["income=<=50K,sex=Female", "income=<=50K,sex=Male",
                                        "income=>50K,sex=Female", "income=>50K,sex=Male"]
    total = sum(d.group_counts() for d in splits)
    expected = census.groupby(["income", "sex"]).size().to_numpy()
    np.testing.assert_array_equal(total, expected)
    # seeded fractions drawn within each group: every group keeps its share in val and test
    for d in (splits.val, splits.test):
        np.testing.assert_allclose(d.group_counts(), np.round(0.2 * expected), atol=1)
    again = from_table(census, label="income", attribute="sex", seed=0)
    np.testing.assert_array_equal(again.test.x, splits.test.x)
    other = from_table(census, label="income", attribute="sex", seed=1)
    assert not np.array_equal(other.test.y, splits.test.y) or not np.array_equal(other.test.x, splits.test.x)


def test_inputs_are_standardised_on_train_one_hot_and_missing_values_follow_the_rule(census):
    splits = from_table(census, label="income", attribute="sex", seed=0)
    names = splits.meta["feature_names"]
    assert "num__age" in names and "cat__workclass_(missing)" in names and "cat__education_Masters" in names
    assert not any("income" in n or "sex" in n for n in names)  # label and attribute are never inputs
    x = splits.train.x
    num = [names.index("num__age"), names.index("num__hours_per_week")]
    # train statistics: mean 0 and std 1 on train (missing ages filled with the train median, which moves the mean)
    np.testing.assert_allclose(x[:, num[1]].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(x[:, num[1]].std(), 1, atol=1e-4)
    assert abs(splits.test.x[:, num[1]].mean()) > 1e-4  # test is transformed with train's statistics, not its own
    cat = [i for i, n in enumerate(names) if n.startswith("cat__workclass_")]
    np.testing.assert_array_equal(x[:, cat].sum(axis=1), 1.0)  # one-hot, missing is its own category
    assert splits.train.x.dtype == np.float32 and np.isfinite(x).all()


def test_split_column_features_drop_and_several_attributes(census):
    frame = census.assign(part=np.resize(["train", "train", "val", "test"], len(census)))
    splits = from_table(frame, label="income", attribute=["sex", "education"], split="part",
                        features="age,workclass,hours_per_week", drop="workclass")
    assert [len(d) for d in splits] == [int((frame.part == s).sum()) for s in ("train", "val", "test")]
    assert splits.train.n_attrs == 8
    assert "income=>50K,sex=Female & education=Masters" in splits.train.group_names
    assert splits.meta["feature_names"] == ["num__age", "num__hours_per_week"]  # workclass dropped


def test_the_registered_dataset_reads_csv_tsv_and_parquet(census, tmp_path):
    census.to_csv(tmp_path / "c.csv", index=False)
    census.to_csv(tmp_path / "c.tsv", index=False, sep="\t")
    census.to_parquet(tmp_path / "c.parquet")
    loaded = [load_dataset("table", 3, path=str(tmp_path / f"c.{ext}"), label="income", attribute="sex")
              for ext in ("csv", "tsv", "parquet")]
    for other in loaded[1:]:
        np.testing.assert_allclose(other.train.x, loaded[0].train.x, atol=1e-6)
        np.testing.assert_array_equal(other.train.g, loaded[0].train.g)


@pytest.mark.parametrize("change, options, fragment, subject", [
    (None, {"label": "incom"}, "column 'incom' (dataset option label) is not in the table", "data:label"),
    (None, {"attribute": "race"}, "column 'race' (dataset option attribute)", "data:attribute"),
    (lambda f: f.assign(income=">50K"), {}, "has one value ('>50K')", "data:label"),
    (lambda f: f.assign(zip=np.arange(len(f)) % 500), {"attribute": "zip"}, "500 distinct values", "data:attribute"),
    (lambda f: f.assign(income=f.income.where(f.index % 50 > 0)), {}, "label column 'income' has 12 missing",
     "data:label"),
    (lambda f: f.assign(part="train"), {"split": "part"}, "has no 'val' rows", "data:split"),
    (lambda f: f.assign(part="dev"), {"split": "part"}, "has value 'dev'", "data:split"),
    (None, {"features": "age,sex"}, "column 'sex' is the label, an attribute or the split", "data:features"),
    (None, {"drop": "salary"}, "column 'salary' (dataset option drop)", "data:drop"),
])
def test_every_problem_is_one_line_naming_the_option(census, change, options, fragment, subject):
    frame = change(census) if change else census
    with pytest.raises(GroupRobustError) as err:
        from_table(frame, **{"label": "income", "attribute": "sex", **options})
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert err.value.subject == subject


def test_datasets_check_prints_group_counts_and_repeated_attribute_options(census, tmp_path, capsys):
    census.to_csv(tmp_path / "census.csv", index=False)
    base = ["datasets", "--check", "table", "--data", f"path={tmp_path / 'census.csv'}", "--data", "label=income"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--data", "attribute=sex", "--data", "attribute=education"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "income=>50K,sex=Female & education=Masters" in out and "600 samples" in out
    assert "2 numeric column(s) standardised (age, hours_per_week), 1 categorical one-hot (workclass)" in out
    with pytest.raises(SystemExit) as exc:
        main([*base, "--data", "attribute=age"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert "attribute column 'age' has 20 missing values" in err and "--data attribute=VALUE" in err
