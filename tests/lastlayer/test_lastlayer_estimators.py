"""GSR, GSR-HF and DFR: scikit-learn conventions, input errors, and group robustness on embedded data."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer import DFR, GSR, WeightedLogisticRegression, worst_group_accuracy
from lastlayer_data import erm_features


@pytest.fixture(scope="module")
def gaussian():
    return erm_features("spurious-gaussian", seed=0, epochs=10)


@pytest.fixture(scope="module")
def digits():
    return erm_features("colored-digits", seed=0, epochs=5, data={"variant": "binary", "conflict": 0.02, "copies": 5})


def fit_gsr(sets, held=None, **params):
    X, y, g = held or sets.held
    Xt, yt, gt = sets.target
    Xv, yv, gv = sets.val
    return GSR(**params).fit(X, y, g, X_target=Xt, y_target=yt, groups_target=gt, X_val=Xv, y_val=yv, groups_val=gv)


def held_out_test_wga(model, sets):
    X, y, g = sets.test
    return worst_group_accuracy(y, model.predict(X), groups=g)


@pytest.mark.parametrize("name", ["gaussian", "digits"])
def test_gsr_raises_target_and_validation_worst_group_accuracy(name, request):
    sets = request.getfixturevalue(name)
    model = fit_gsr(sets, n_steps=40)
    start, best = model.history_[0], model.history_[model.best_step_]
    assert best["val_worst_group_acc"] >= start["val_worst_group_acc"] + 0.2
    assert best["target_worst_group_acc"] >= start["target_worst_group_acc"] + 0.2
    assert held_out_test_wga(model, sets) > sets.erm_test_wga + 0.2
    # the fitted head is the selected step's head on the selected weights
    assert np.isclose(model.weights_.sum(), 1.0) and model.weights_.min() >= 0
    Xv, yv, gv = sets.val
    assert worst_group_accuracy(yv, model.predict(Xv), groups=gv) == pytest.approx(best["val_worst_group_acc"])


@pytest.mark.parametrize("name", ["gaussian", "digits"])
def test_dfr_beats_erm_worst_group_accuracy(name, request):
    sets = request.getfixturevalue(name)
    X, y, g = (np.concatenate(parts) for parts in zip(sets.target, sets.val))
    model = DFR(n_subsamples=3, random_state=0).fit(X, y, g)
    assert held_out_test_wga(model, sets) > sets.erm_test_wga + 0.2
    assert model.C_ in model.cv_scores_


def test_gsr_beats_erm_with_40_percent_label_noise_in_held_out_set(gaussian):
    X, y, g = gaussian.held
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.4
    noisy = np.where(flip, 1 - y, y)
    model = fit_gsr(gaussian, held=(X, noisy, g), n_steps=40)
    assert held_out_test_wga(model, gaussian) > gaussian.erm_test_wga + 0.1
    # corrupted samples end up with less weight than clean ones
    assert model.weights_[flip].mean() < model.weights_[~flip].mean()


def test_gsr_free_hessian_and_history_contents(gaussian):
    model = fit_gsr(gaussian, hessian="free", n_steps=6)
    assert len(model.history_) == 7 and model.history_[0]["step"] == 0
    entry = model.history_[0]
    assert {"target_worst_group_acc", "val_worst_group_acc", "gamma", "time_s", "group_weight"} <= set(entry)
    assert np.isclose(sum(entry["gamma"]), 1.0)
    assert model.weight_trajectory_.shape == (len(model.trajectory_steps_), len(gaussian.held[1]))
    np.testing.assert_allclose(model.weight_trajectory_[0], 1 / len(gaussian.held[1]))


def test_gsr_without_validation_keeps_last_step(gaussian):
    X, y, _ = gaussian.held
    Xt, yt, gt = gaussian.target
    model = GSR(n_steps=3).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)
    assert model.best_step_ == 3 and model.history_[-1]["val_worst_group_acc"] is None


def test_weighted_logistic_regression_passes_sklearn_estimator_checks():
    check_estimator(WeightedLogisticRegression())


def test_estimators_store_their_arguments_and_fit_leaves_them_unchanged(gaussian):
    X, y, g = gaussian.held
    Xt, yt, gt = gaussian.target
    cases = [
        (GSR(l2=0.5, hessian="free", n_steps=2), {"l2": 0.5, "hessian": "free", "n_steps": 2},
         lambda est: est.fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)),
        (DFR(penalty="l2", Cs=(1.0, 0.1), n_subsamples=2), {"penalty": "l2", "Cs": (1.0, 0.1), "n_subsamples": 2},
         lambda est: est.fit(Xt, yt, gt)),
        (WeightedLogisticRegression(l2=0.3), {"l2": 0.3}, lambda est: est.fit(X, y)),
    ]
    for est, given, fit in cases:
        params = est.get_params()
        assert {k: params[k] for k in given} == given, type(est).__name__
        assert type(est)(**params).get_params() == params, type(est).__name__
        fit(est)
        assert est.get_params() == params, f"{type(est).__name__}.fit changed its parameters"


def test_weighted_logistic_regression_in_a_pipeline_grid_search_keeps_string_labels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = np.array(["a", "b"])[(X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)]
    grid = GridSearchCV(make_pipeline(StandardScaler(), WeightedLogisticRegression()),
                        {"weightedlogisticregression__l2": [0.01, 1.0]}, cv=3).fit(X, y)
    assert grid.score(X, y) > 0.8 and set(grid.predict(X)) <= {"a", "b"}
    proba = grid.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_gsr_and_dfr_keep_string_labels_and_raw_feature_coefficients(gaussian):
    X, y, g = gaussian.held
    Xt, yt, gt = gaussian.target
    names = np.array(["land", "water"])
    model = GSR(n_steps=2).fit(X, names[y], X_target=Xt, y_target=names[yt], groups_target=gt)
    assert set(model.predict(Xt)) <= set(names)
    logits = X @ model.coef_.T + model.intercept_
    np.testing.assert_array_equal(names[np.argmax(logits, axis=1)], model.predict(X))


@pytest.mark.parametrize("kwargs, message", [
    ({"X_target": None}, "X_target"),
    ({"groups_val": None}, "all of X_val"),
    ({"y_target": "bad-classes"}, "not seen"),
    ({"X_target": "narrow"}, "features"),
])
def test_gsr_rejects_bad_fit_input(gaussian, kwargs, message):
    X, y, _ = gaussian.held
    Xt, yt, gt = gaussian.target
    Xv, yv, gv = gaussian.val
    args = {"X_target": Xt, "y_target": yt, "groups_target": gt, "X_val": Xv, "y_val": yv, "groups_val": gv}
    if kwargs.get("y_target") == "bad-classes":
        kwargs = {"y_target": yt + 7}
    if kwargs.get("X_target") == "narrow":
        kwargs = {"X_target": Xt[:, :3]}
    args.update(kwargs)
    with pytest.raises(GroupRobustError, match=message):
        GSR(n_steps=1).fit(X, y, **args)


@pytest.mark.parametrize("params", [{"hessian": "dense"}, {"l2": 0}, {"tau": -1}, {"step_decay": 2.0}])
def test_gsr_rejects_bad_parameters(gaussian, params):
    X, y, _ = gaussian.held
    Xt, yt, gt = gaussian.target
    with pytest.raises(GroupRobustError):
        GSR(**params).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)


def test_dfr_rejects_bad_input():
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    with pytest.raises(GroupRobustError, match="groups"):
        DFR().fit(X, y)
    with pytest.raises(GroupRobustError, match="penalty"):
        DFR(penalty="l3").fit(X, y, y)
