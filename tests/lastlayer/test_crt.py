"""Classifier re-training on frozen features (Kang et al.): cRT's class-balanced draws, ReWeightCRT's
equal class weights, VanillaCRT as it is, and the two-stage methods built on them."""

import json

import numpy as np
import pytest

from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer import ClassifierRetraining
from grouprobust.lastlayer.crt import class_balanced_draw, class_balanced_sample_weights
from grouprobust.runs import run


def imbalanced(n_major: int = 950, n_minor: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes, 95 / 5: an unbalanced head favours the majority class."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]
    X = rng.normal(size=(len(y), 5))
    X[:, 0] += 1.5 * y
    return X, y


def worst_class_accuracy(model, X, y) -> float:
    pred = model.predict(X)
    return min(float(np.mean(pred[y == c] == c)) for c in np.unique(y))


def test_class_balanced_draw_takes_every_class_equally_often():
    y = np.r_[np.zeros(97, int), np.ones(3, int), np.full(20, 2)]
    idx = class_balanced_draw(y, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [40, 40, 40]


def test_crt_heads_see_class_balanced_batches(monkeypatch):
    X, y = imbalanced()
    seen = []
    original = ClassifierRetraining._one_fit

    def spy(self, X_fit, y_fit, w, C):
        seen.append((np.bincount(y_fit, minlength=2), w))
        return original(self, X_fit, y_fit, w, C)

    monkeypatch.setattr(ClassifierRetraining, "_one_fit", spy)
    model = ClassifierRetraining(balance="sample", Cs=(1.0,), n_draws=3, random_state=0).fit(X, y)
    assert len(seen) == 3 + 3  # the C choice on a split, then the final fit: n_draws heads each
    for counts, w in seen:
        assert w is None and counts[0] == counts[1] > 0
    np.testing.assert_allclose(model.class_weight_, [0.5, 0.5])


def test_reweight_crt_gives_every_class_the_same_total_weight(monkeypatch):
    X, y = imbalanced()
    w = class_balanced_sample_weights(y)
    np.testing.assert_allclose(np.bincount(y, weights=w), [len(y) / 2] * 2)
    assert w.mean() == pytest.approx(1.0)
    model = ClassifierRetraining(balance="reweight", Cs=(1.0,), random_state=0).fit(X, y)
    np.testing.assert_allclose(model.class_weight_, [0.5, 0.5])
    vanilla = ClassifierRetraining(balance="none", Cs=(1.0,), random_state=0).fit(X, y)
    np.testing.assert_allclose(vanilla.class_weight_, [0.95, 0.05])


def test_balanced_retraining_raises_the_minority_class_accuracy_over_vanilla():
    X, y = imbalanced(seed=0)
    X_test, y_test = imbalanced(500, 500, seed=1)
    scores = {b: worst_class_accuracy(ClassifierRetraining(balance=b, Cs=(1.0,), random_state=0).fit(X, y),
                                      X_test, y_test) for b in ("sample", "reweight", "none")}
    assert scores["sample"] > scores["none"] + 0.1 and scores["reweight"] > scores["none"] + 0.1, scores


def test_c_is_chosen_by_validation_worst_group_accuracy():
    X, y = imbalanced()
    Xv, yv = imbalanced(200, 200, seed=2)
    gv = yv * 2 + (Xv[:, 1] > 0)
    model = ClassifierRetraining(Cs=(1.0, 1e-4), random_state=0).fit(X, y, X_val=Xv, y_val=yv, groups_val=gv)
    assert model.C_ == max(model.cv_scores_, key=model.cv_scores_.get)
    assert set(model.cv_scores_) == {1.0, 1e-4}
    params = model.get_params()
    assert ClassifierRetraining(**params).get_params() == params
    with pytest.raises(GroupRobustError, match="pass all of X_val, y_val and groups_val"):
        ClassifierRetraining().fit(X, y, X_val=Xv)
    with pytest.raises(GroupRobustError, match="balance='groups' is not allowed"):
        ClassifierRetraining(balance="groups").fit(X, y)


def test_crt_methods_fit_the_heldout_samples_without_group_labels(tmp_path):
    data = {"n": 600, "n_val": 300, "n_test": 300}
    hp = {"epochs": 1, "hidden": 16, "Cs": [1.0, 0.1], "n_draws": 2}
    first = run(resolve_config("spurious-gaussian", "crt", 0, data, hp, regime="val"), tmp_path / "crt")
    info = first["method_info"]
    assert info["balance"] == "sample" and info["class_weight"] == pytest.approx([0.5, 0.5])
    stage1 = str(tmp_path / "crt" / "stage1")
    for method, balance in (("reweight-crt", "reweight"), ("vanilla-crt", "none")):
        result = run(resolve_config("spurious-gaussian", method, 0, data, {**hp, "stage1": stage1}, regime="val"),
                     tmp_path / method)
        assert result["method_info"]["balance"] == balance and result["stage1"]["run_dir"] == stage1
    history = [json.loads(line) for line in (tmp_path / "crt" / "history.jsonl").read_text().splitlines()]
    assert {h["C"] for h in history} == {1.0, 0.1} and first["selected"]["C"] in (1.0, 0.1)
    assert first["n_heldout"] == 60
