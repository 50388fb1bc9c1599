"""Worst-group scorers in scikit-learn model selection (metadata routing), and the docs' example."""

import re
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer import DFR, GSR, group_balanced_accuracy, worst_group_accuracy, worst_group_scorer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lastlayer.md"


def test_metrics_on_a_worked_example():
    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 0])
    groups = np.array([5, 5, 7, 7, 7, 9])  # accuracies 1/2, 2/3, 1
    assert worst_group_accuracy(y_true, y_pred, groups=groups) == pytest.approx(0.5)
    assert group_balanced_accuracy(y_true, y_pred, groups=groups) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    with pytest.raises(GroupRobustError, match="needs the group labels"):
        worst_group_accuracy(y_true, y_pred, groups=None)


def test_scorer_needs_metadata_routing():
    with sklearn.config_context(enable_metadata_routing=False):
        with pytest.raises(GroupRobustError, match="enable_metadata_routing=True"):
            worst_group_scorer()


def _spurious(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1.0, n), 2 * a + rng.normal(0, 0.3, n), rng.normal(size=(n, 2))]
    return X, y, 2 * y + a


def test_cross_validate_routes_each_folds_groups_to_the_scorer():
    X, y, g = _spurious()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        scores = cross_validate(LogisticRegression(), X, y, scoring=worst_group_scorer(), params={"groups": g}, cv=cv)
    expected = []
    for train, test in cv.split(X, y):
        model = LogisticRegression().fit(X[train], y[train])
        expected.append(worst_group_accuracy(y[test], model.predict(X[test]), groups=g[test]))
    np.testing.assert_allclose(scores["test_score"], expected)
    assert max(expected) < 0.5  # the spurious feature wins on average and loses the minority groups


def test_grid_search_routes_groups_to_dfr_and_the_scorer():
    X, y, g = _spurious()
    cv = StratifiedKFold(3)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(DFR(n_subsamples=2, Cs=(1.0,), random_state=0).set_fit_request(groups=True),
                              {"penalty": ["l1", "l2"]}, scoring=worst_group_scorer(), cv=cv).fit(X, y, groups=g)
    for i, params in enumerate(search.cv_results_["params"]):
        for k, (train, test) in enumerate(cv.split(X, y)):
            model = DFR(n_subsamples=2, Cs=(1.0,), random_state=0, **params).fit(X[train], y[train], g[train])
            expected = worst_group_accuracy(y[test], model.predict(X[test]), groups=g[test])
            assert search.cv_results_[f"split{k}_test_score"][i] == pytest.approx(expected)
    best = int(np.argmax(search.cv_results_["mean_test_score"]))
    assert search.best_params_ == search.cv_results_["params"][best]


def test_the_docs_example_runs():
    text = DOCS.read_text()
    block = re.search(r"### Group scores in model selection.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    with sklearn.config_context():  # the example sets the global config; restore it afterwards
        exec(compile(block, str(DOCS), "exec"), namespace)
    assert namespace["search"].best_score_ > np.max(namespace["cv"]["test_worst_group"])


# Failures of check_estimator that are not about the missing group labels (docs/lastlayer.md lists them).
WORDING = {"check_fit2d_1feature", "check_positive_only_tag_during_fit", "check_all_zero_sample_weights_error",
           "check_sample_weights_pandas_series", "check_classifiers_one_label_sample_weights"}


@pytest.mark.parametrize("estimator, needs", [(DFR(n_subsamples=2, Cs=(1.0,)), "groups is required"),
                                              (GSR(n_steps=1), "groups_target")])
def test_check_estimator_fails_only_for_the_documented_reasons(estimator, needs):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, on_fail=None)
    failed = [r for r in results if r["status"] == "failed"]
    assert failed
    for r in failed:
        assert needs in str(r["exception"]) or r["check_name"] in WORDING, r["check_name"]
