"""`DFR`: deep feature reweighting (Kirichenko et al.): retrain the head on group-balanced subsets."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._base import LinearHead, Standardizer, full_head, native_threads
from grouprobust.lastlayer._validation import check_features, check_groups, validation_given
from grouprobust.lastlayer.scoring import worst_group_accuracy
from grouprobust.params import POSITIVE, Choice, Interval
from grouprobust.selection import select_best_index, selection_key

PENALTIES = ("l1", "l2")
DEFAULT_CS = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


def _penalty_args(penalty: str) -> dict[str, Any]:
    """scikit-learn >= 1.8 spells the penalty as ``l1_ratio``; older versions as ``penalty``."""
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}


def balanced_subset(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a subsample with equally many samples (the smallest group's size) from every group."""
    ids = np.unique(groups)
    size = min(int(np.sum(groups == g)) for g in ids)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), size, replace=False) for g in ids])


class DFR(LinearHead):
    """Logistic-regression head retrained on group-balanced subsamples, averaged over ``n_subsamples``.

    ``fit(X, y, groups)`` trains on the group-labelled data ``(X, y, groups)`` (in DFR, the
    validation set). The inverse regularisation strength ``C`` is chosen from ``Cs`` by worst-group
    accuracy on ``(X_val, y_val, groups_val)`` if given (exact ties go to the higher average accuracy,
    then to the earlier ``C`` in ``Cs``; DFR's own code takes the earlier ``C`` at once); otherwise the data are split into two
    group-stratified halves, ``C`` is chosen on one half trained on the other, and the final head
    is refit on all of the data, as DFR does. Features are standardised with the training data's
    statistics when ``standardize`` (``coef_``/``intercept_`` act on raw features). Each fit
    uses scikit-learn's ``LogisticRegression`` (liblinear for binary L1, saga for multiclass L1,
    lbfgs for L2).

    Fitted: ``coef_`` ``(k, d)``, ``intercept_`` ``(k,)`` (for two classes: ``[-z/2, z/2]`` of
    the binary score ``z``), ``classes_``, ``C_`` (chosen), ``cv_scores_`` (``{C: worst-group acc}``).
    """

    parameter_constraints = {"penalty": Choice(PENALTIES), "Cs": POSITIVE, "n_subsamples": Interval(1),
                             "max_iter": Interval(1)}

    def __init__(self, penalty: str = "l1", Cs: tuple[float, ...] = DEFAULT_CS, n_subsamples: int = 10,
                 standardize: bool = True, max_iter: int = 1000, random_state: Any = None):
        self.penalty = penalty
        self.Cs = Cs
        self.n_subsamples = n_subsamples
        self.standardize = standardize
        self.max_iter = max_iter
        self.random_state = random_state

    def _one_fit(self, X: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        multiclass = len(self.classes_) > 2
        solver = "lbfgs" if self.penalty == "l2" else ("saga" if multiclass else "liblinear")
        clf = LogisticRegression(C=C, solver=solver, max_iter=int(self.max_iter), random_state=seed,
                                 **_penalty_args(self.penalty))
        clf.fit(X, y)
        return full_head(clf, len(self.classes_), X.shape[1])

    def _averaged(self, X: np.ndarray, y: np.ndarray, g: np.ndarray, C: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        coefs, intercepts = [], []
        for _ in range(int(self.n_subsamples)):
            idx = balanced_subset(g, rng)
            if len(np.unique(y[idx])) < 2:
                raise GroupRobustError("DFR: a group-balanced subsample holds a single class; every class needs "
                                       "samples in the group-labelled data")
            c, b = self._one_fit(X[idx], y[idx], C, int(rng.integers(2**31)))
            coefs.append(c)
            intercepts.append(b)
        return np.mean(coefs, axis=0), np.mean(intercepts, axis=0)

    @native_threads
    def fit(self, X, y, groups=None, X_val=None, y_val=None, groups_val=None) -> "DFR":
        """Fit on group-labelled ``(X, y, groups)``; select ``C`` on the validation triple (or a split); returns ``self``."""
        self._check_params()
        Cs = [float(c) for c in np.atleast_1d(self.Cs)]
        X = check_features(X, "X")
        codes = self._encode(y, len(X))
        g = check_groups(groups, len(X), "groups")
        has_val = validation_given("DFR.fit", X_val, y_val, groups_val)
        rng = np.random.default_rng(self.random_state)
        scaler = Standardizer(X, bool(self.standardize))
        Xs = scaler(X)
        if has_val:
            Xv = scaler(check_features(X_val, "X_val", n_features=X.shape[1]))
            yv = self._encode_more(y_val, len(Xv), "y_val")
            gv = check_groups(groups_val, len(Xv), "groups_val")
            X_tr, y_tr, g_tr = Xs, codes, g
        else:
            first = np.zeros(len(X), dtype=bool)
            for gid in np.unique(g):
                idx = rng.permutation(np.flatnonzero(g == gid))
                first[idx[: (len(idx) + 1) // 2]] = True
            X_tr, y_tr, g_tr = Xs[first], codes[first], g[first]
            Xv, yv, gv = Xs[~first], codes[~first], g[~first]
        scores, keys = {}, []
        for C in Cs:
            coef, intercept = self._averaged(X_tr, y_tr, g_tr, C, rng)
            pred = np.argmax(Xv @ coef.T + intercept, axis=1)
            scores[C] = worst_group_accuracy(yv, pred, groups=gv)
            keys.append(selection_key(scores[C], float(np.mean(pred == yv))))
        # the project's one selection rule: worst-group accuracy, ties to average accuracy, then the first C
        self.C_ = Cs[select_best_index(keys)]
        self.cv_scores_ = scores
        coef, intercept = self._averaged(Xs, codes, g, self.C_, rng)
        self.coef_, self.intercept_ = scaler.unscale(coef, intercept)
        self.n_features_in_ = X.shape[1]
        return self
