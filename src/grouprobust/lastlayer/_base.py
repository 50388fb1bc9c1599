"""Shared pieces of the last-layer estimators: label encoding, feature scaling, linear prediction."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._validation import check_features, check_vector
from grouprobust.params import Constraint, admits
from grouprobust.threads import native_thread_policy

FitMethod = TypeVar("FitMethod", bound=Callable[..., Any])


def native_threads(fit: FitMethod) -> FitMethod:
    """Decorate an estimator's ``fit`` to run under the product's thread policy for native pools
    (`grouprobust.threads.native_thread_policy`: restored afterwards, the user's own setting wins)."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        with native_thread_policy():
            return fit(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LinearHead(ClassifierMixin, BaseEstimator):
    """A multinomial linear classifier on features: ``coef_`` ``(k, d)``, ``intercept_`` ``(k,)``, ``classes_``.

    Subclasses fit these attributes; this class gives ``logits`` ``(n, k)``, ``decision_function``,
    ``predict_proba`` (softmax) and ``predict`` (a class of ``classes_``).

    ``parameter_constraints`` maps constructor parameters to their `Interval` or `Choice` (a
    sequence parameter: every element, and at least one); ``nullable`` lists those that may be
    None. `_check_params` enforces them at ``fit``; the two-stage methods declare the same
    constraints to the config layer (`grouprobust.methods.last_layer`), so there is one source.
    """

    parameter_constraints: dict[str, Constraint] = {}
    nullable: tuple[str, ...] = ()

    def _check_params(self) -> None:
        """Raise a one-line error naming the first parameter outside its constraint."""
        for name, constraint in self.parameter_constraints.items():
            value = getattr(self, name)
            if value is None and name in self.nullable:
                continue
            if not admits(constraint, value):
                allowed = str(constraint)
                raise GroupRobustError(f"{type(self).__name__}: {name}={value!r} is not allowed: it must be "
                                       f"{'in ' if not allowed.startswith('one of') else ''}{allowed}"
                                       f"{' (every element)' if isinstance(value, (list, tuple)) else ''}",
                                       subject=f"hparam:{name}")

    def _encode(self, y, n: int, name: str = "y") -> np.ndarray:
        """Store ``classes_`` from ``y`` and return ``y`` as indices ``0..k-1``."""
        from sklearn.utils import column_or_1d
        from sklearn.utils.multiclass import type_of_target

        if y is None:
            raise GroupRobustError(f"{type(self).__name__} requires y to be passed, but the target y is None; pass the labels")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column vector: scikit-learn's DataConversionWarning, then ravel
        y = check_vector(y, n, name)

        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            # "Unknown label type" is the phrase scikit-learn's estimator checks look for.
            raise GroupRobustError(f"Unknown label type: {name} is {kind}; pass class labels (integers or strings)")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise GroupRobustError(f"{name} has only one class ({self.classes_[0]!r}); the head needs at least two")
        return codes.astype(np.intp)

    def _encode_more(self, y, n: int, name: str) -> np.ndarray:
        """Map labels of another split to the fitted class indices."""
        y = check_vector(y, n, name)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if len(y) and np.any(self.classes_[idx] != y):
            unknown = sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))[:3]
            raise GroupRobustError(f"{name} has classes {unknown} not seen in y; use the same label set for every split")
        return idx.astype(np.intp)

    def logits(self, X) -> np.ndarray:
        """Logits ``(n, k)``, one column per entry of ``classes_`` (they sum to zero per row)."""
        check_is_fitted(self)
        X = check_features(X, "X", n_features=self.n_features_in_, owner=type(self).__name__)
        return X @ self.coef_.T + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """scikit-learn's convention: logits ``(n, k)``, or for two classes the score ``(n,)`` of ``classes_[1]``."""
        z = self.logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, k)``, columns ordered as ``classes_``."""
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Predicted labels (entries of ``classes_``)."""
        z = self.logits(X)
        return self.classes_[np.argmax(z, axis=1)]


class Standardizer:
    """Per-feature centring and scaling fitted on one set; constant features keep scale 1."""

    def __init__(self, X: np.ndarray, enabled: bool, chunk: int = 512):
        d = X.shape[1]
        self.mean, scale = np.zeros(d), np.ones(d)
        if enabled:
            # two passes in row chunks: the same two-pass variance as ``X.std(axis=0)`` without its
            # full-size temporaries (a large held-out matrix is not copied); 512 rows stay in a core's cache
            self.mean = X.sum(axis=0) / len(X)
            sq = np.zeros(d)
            for lo in range(0, len(X), chunk):
                dev = X[lo:lo + chunk] - self.mean
                sq += np.einsum("nd,nd->d", dev, dev)
            scale = np.sqrt(sq / len(X))
        self.scale = np.where(scale > 1e-12, scale, 1.0)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def unscale(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients on standardised features -> the same model on raw features."""
        raw = coef / self.scale
        return raw, intercept - raw @ self.mean


def full_head(clf: Any, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn ``LogisticRegression`` as this package's head on ``k`` classes: ``(coef (k, d),
    intercept (k,))`` with one row per class index. A binary fit's single score ``z`` becomes the rows
    ``[-z/2, z/2]`` of its two classes (logits summing to zero); classes it never saw keep zero rows."""
    coef, intercept = np.zeros((k, d)), np.zeros(k)
    if len(clf.classes_) == 2:
        z, b = clf.coef_[0] / 2, clf.intercept_[0] / 2
        coef[clf.classes_], intercept[clf.classes_] = np.stack([-z, z]), np.array([-b, b])
    else:
        coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
    return coef, intercept
