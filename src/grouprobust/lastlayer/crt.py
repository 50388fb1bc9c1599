"""`ClassifierRetraining`: Kang et al.'s decoupling (cRT): retrain the head on frozen features, class-balanced.

No group labels are used to fit: ``balance="sample"`` (cRT) fits on class-balanced draws,
``balance="reweight"`` (ReWeightCRT) weights every class to the same total, ``balance="none"``
(VanillaCRT) fits on the samples as they are. Group labels enter only through the optional
validation triple that chooses the regularisation ``C``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._base import LinearHead, Standardizer, full_head, native_threads
from grouprobust.lastlayer._validation import check_features, check_groups, validation_given
from grouprobust.lastlayer.scoring import worst_group_accuracy
from grouprobust.params import POSITIVE, Choice, Interval
from grouprobust.selection import select_best_index, selection_key

BALANCES = ("sample", "reweight", "none")
DEFAULT_CS = (1.0, 0.3, 0.1, 0.03, 0.01)


def class_balanced_draw(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k * ceil(n / k)`` draws with replacement, ``ceil(n / k)`` from each of the ``k`` classes
    present in ``y``: every class appears equally often (cRT's class-balanced sampler over one epoch)."""
    y = np.asarray(y)
    classes = np.unique(y)
    per_class = -(-len(y) // len(classes))
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=True) for c in classes])


def class_balanced_sample_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights ``n / (k * n_c)``: every present class gets total weight ``n / k``; they average 1."""
    y = np.asarray(y)
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    return len(y) / (len(counts) * counts[codes].astype(np.float64))


class ClassifierRetraining(LinearHead):
    """L2 logistic-regression head retrained on frozen features with class balancing, no group labels.

    ``fit(X, y)`` trains on ``(X, y)`` (in the two-stage protocol, the held-out training samples):

    * ``balance="sample"`` (cRT): ``n_draws`` class-balanced draws with replacement
      (`class_balanced_draw`), one head fitted per draw, coefficients averaged;
    * ``balance="reweight"`` (ReWeightCRT): one head on all samples with weights ``n / (k n_c)``;
    * ``balance="none"`` (VanillaCRT): one head on all samples, unweighted.

    ``C`` is chosen from ``Cs`` by worst-group accuracy on ``(X_val, y_val, groups_val)`` when given
    (ties to average accuracy, then the earlier ``C``); without them, by worst-class accuracy on a
    class-stratified half of ``(X, y)`` with the head trained on the other half, then refit on all.

    Fitted: ``coef_``, ``intercept_`` (raw features), ``classes_``, ``C_``, ``cv_scores_``, and
    ``class_weight_``: the total weight each class had in the final fit (summed over draws), as a
    fraction of the total.
    """

    parameter_constraints = {"balance": Choice(BALANCES), "Cs": POSITIVE, "n_draws": Interval(1),
                             "max_iter": Interval(1)}

    def __init__(self, balance: str = "sample", Cs: tuple[float, ...] = DEFAULT_CS, n_draws: int = 5,
                 standardize: bool = True, max_iter: int = 1000, random_state: Any = None):
        self.balance = balance
        self.Cs = Cs
        self.n_draws = n_draws
        self.standardize = standardize
        self.max_iter = max_iter
        self.random_state = random_state

    def _one_fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None, C: float) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.classes_)
        clf = LogisticRegression(C=C, max_iter=int(self.max_iter))
        clf.fit(X, y, sample_weight=w)
        return full_head(clf, k, X.shape[1])

    def _fit_balanced(self, X: np.ndarray, y: np.ndarray, C: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(coef, intercept, total weight per class index)`` of one balanced fit at ``C``."""
        k = len(self.classes_)
        if len(np.unique(y)) < 2:
            raise GroupRobustError("ClassifierRetraining: the training samples hold a single class; the head needs "
                                   "at least two")
        if self.balance != "sample":
            w = class_balanced_sample_weights(y) if self.balance == "reweight" else None
            coef, intercept = self._one_fit(X, y, w, C)
            mass = np.bincount(y, weights=w, minlength=k)
            return coef, intercept, mass
        coefs, intercepts, mass = [], [], np.zeros(k)
        for _ in range(int(self.n_draws)):
            idx = class_balanced_draw(y, rng)
            c, b = self._one_fit(X[idx], y[idx], None, C)
            coefs.append(c)
            intercepts.append(b)
            mass += np.bincount(y[idx], minlength=k)
        return np.mean(coefs, axis=0), np.mean(intercepts, axis=0), mass

    @native_threads
    def fit(self, X, y, X_val=None, y_val=None, groups_val=None) -> "ClassifierRetraining":
        """Fit on ``(X, y)`` (no group labels); choose ``C`` on the validation triple (or a split); returns ``self``."""
        self._check_params()
        Cs = [float(c) for c in np.atleast_1d(self.Cs)]
        X = check_features(X, "X")
        codes = self._encode(y, len(X))
        has_val = validation_given("ClassifierRetraining.fit", X_val, y_val, groups_val)
        rng = np.random.default_rng(self.random_state)
        scaler = Standardizer(X, bool(self.standardize))
        Xs = scaler(X)
        if has_val:
            Xv = scaler(check_features(X_val, "X_val", n_features=X.shape[1]))
            yv = self._encode_more(y_val, len(Xv), "y_val")
            gv = check_groups(groups_val, len(Xv), "groups_val")
            X_tr, y_tr = Xs, codes
        else:
            first = np.zeros(len(X), dtype=bool)
            for c in np.unique(codes):
                idx = rng.permutation(np.flatnonzero(codes == c))
                first[idx[: (len(idx) + 1) // 2]] = True
            X_tr, y_tr, Xv, yv = Xs[first], codes[first], Xs[~first], codes[~first]
            gv = yv  # worst-class accuracy: the classes are the groups
        scores, keys = {}, []
        for C in Cs:
            coef, intercept, _ = self._fit_balanced(X_tr, y_tr, C, rng)
            pred = np.argmax(Xv @ coef.T + intercept, axis=1)
            scores[C] = worst_group_accuracy(yv, pred, groups=gv)
            keys.append(selection_key(scores[C], float(np.mean(pred == yv))))
        self.C_ = Cs[select_best_index(keys)]
        self.cv_scores_ = scores
        coef, intercept, mass = self._fit_balanced(Xs, codes, self.C_, rng)
        self.coef_, self.intercept_ = scaler.unscale(coef, intercept)
        self.class_weight_ = mass / mass.sum()
        self.n_features_in_ = X.shape[1]
        return self
