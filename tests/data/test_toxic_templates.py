"""The embedded text dataset `toxic-templates`: overlap, spurious correlation, determinism, a text run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError


@pytest.fixture(scope="module")
def splits():
    return load_dataset("toxic-templates", 0)


def test_overlapping_identity_groups(splits):
    test = splits.test
    assert test.eval_groups.shape == (len(test), 16)
    per_comment = test.eval_groups.sum(axis=1)
    assert (per_comment >= 2).sum() > 50  # many comments mention two identities
    # eval group "<identity>,<label>" only holds comments of that label
    toxic_cols = [j for j, n in enumerate(test.eval_group_names) if n.endswith(",toxic")]
    assert not test.eval_groups[test.y == 0][:, toxic_cols].any()
    # the training attribute is "any identity mentioned"
    np.testing.assert_array_equal(per_comment > 0, test.a == 1)
    texts = test.meta["texts"]
    i = test.eval_group_names.index("muslim,non-toxic")
    assert all(any(w in texts[k] for w in ("muslims", "islam", "the mosque")) for k in np.flatnonzero(test.eval_groups[:, i]))


def _mention_gap(ds) -> float:
    return float(ds.a[ds.y == 1].mean() - ds.a[ds.y == 0].mean())


def test_spurious_correlation_in_train_not_in_test(splits):
    assert _mention_gap(splits.train) > 0.7   # P(identity | toxic) - P(identity | clean) = 0.9 - 0.1
    assert abs(_mention_gap(splits.test)) < 0.1
    assert abs(_mention_gap(splits.val)) < 0.1
    weaker = load_dataset("toxic-templates", 0, eval_spurious=0.7)
    assert 0.25 < _mention_gap(weaker.test) < 0.55


def test_deterministic_per_seed(splits):
    again = load_dataset("toxic-templates", 0)
    np.testing.assert_array_equal(again.train.x, splits.train.x)
    np.testing.assert_array_equal(again.test.eval_groups, splits.test.eval_groups)
    other = load_dataset("toxic-templates", 1)
    assert not np.array_equal(other.train.y, splits.train.y)
    assert splits.train.x.dtype == np.float32 and splits.train.x.shape[1] == 1024


def test_bad_options():
    with pytest.raises(GroupRobustError, match="spurious must lie in"):
        load_dataset("toxic-templates", 0, spurious=1.5)


def test_erm_text_run_has_worst_group_below_average(tmp_path):
    from grouprobust.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["train", "--dataset", "toxic-templates", "--method", "erm", "--out", str(tmp_path / "run"), "-q"])
    assert ex.value.code == 0
    test = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]["test"]
    assert test["worst_group_acc"] < test["avg_acc"] - 0.2
    assert test["eval_groups"]["worst_group_acc"] < test["avg_acc"] - 0.2
