"""DCI (Eastwood & Williams, 2018): disentanglement, completeness and informativeness of a representation.

An importance matrix ``R`` (code dimensions × factors) comes from one scikit-learn predictor per
factor, fitted to predict the factor from the representation; ``R[i, j]`` is how much predictor
``j`` relies on code dimension ``i`` (a random forest's impurity importances by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from grouprobust.errors import GroupRobustError


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis) / np.log(base)


def disentanglement(importance: np.ndarray) -> float:
    """Disentanglement in [0, 1]: each code dimension's 1 − entropy over factors, weighted by its importance.

    A dimension used by exactly one factor scores 1; with one factor disentanglement is 1 by definition.
    """
    r = _check_importance(importance)
    n_dims, n_factors = r.shape
    if n_factors == 1:
        return 1.0
    row = r.sum(axis=1)
    used = row > 0
    per_dim = 1.0 - _entropy(r[used] / row[used, None], n_factors, axis=1)
    return float(np.sum(per_dim * row[used] / row.sum()))


def completeness_per_factor(importance: np.ndarray) -> np.ndarray:
    """Completeness of each factor in [0, 1]: 1 − entropy (base = number of code dims) of its importances.

    1 when a factor is captured by a single code dimension, lower as it is spread over more.
    """
    r = _check_importance(importance)
    n_dims = r.shape[0]
    if n_dims == 1:
        return np.ones(r.shape[1])
    col = r.sum(axis=0)
    return 1.0 - _entropy(r / np.where(col > 0, col, 1.0)[None, :], n_dims, axis=0)


def _check_importance(importance: np.ndarray) -> np.ndarray:
    r = np.abs(np.asarray(importance, dtype=np.float64))
    if r.ndim != 2 or r.size == 0:
        raise GroupRobustError(f"importance matrix must be 2-D (code dims × factors), got shape {r.shape}")
    if (r.sum(axis=0) <= 0).any():
        raise GroupRobustError("a factor has zero importance on every code dimension; its predictor learned "
                               "nothing (check that the factor varies in the data)")
    return r


@dataclass
class DCIResult:
    """Scores of one representation: importance matrix (dims × factors) and the three DCI numbers."""

    importance: np.ndarray
    factor_names: list[str]
    disentanglement: float
    completeness: dict[str, float]
    informativeness: dict[str, float]

    @property
    def mean_completeness(self) -> float:
        """Completeness averaged over factors."""
        return float(np.mean(list(self.completeness.values())))


def dci(codes: np.ndarray, factors: np.ndarray, factor_names: list[str] | None = None,
        predictor: ClassifierMixin | None = None, test_size: float = 0.3, seed: int = 0) -> DCIResult:
    """DCI of ``codes`` (n × dims) for discrete ``factors`` (n × k).

    Each factor gets a clone of ``predictor`` (default: a seeded random forest) fitted on a
    ``1 − test_size`` share; informativeness is its held-out accuracy (a fraction), importance is
    ``feature_importances_`` (or ``|coef_|`` summed over classes for linear models).
    """
    z = np.asarray(codes, dtype=np.float64).reshape(len(codes), -1)
    f = np.asarray(factors).reshape(len(factors), -1)
    if len(z) != len(f):
        raise GroupRobustError(f"codes have {len(z)} rows but factors {len(f)}; pass one factor row per example")
    names = factor_names or [f"factor{j}" for j in range(f.shape[1])]
    if len(names) != f.shape[1]:
        raise GroupRobustError(f"{len(names)} factor names for {f.shape[1]} factors")
    base = predictor if predictor is not None else RandomForestClassifier(
        n_estimators=50, max_depth=6, max_features=None, random_state=seed, n_jobs=1)
    importance = np.zeros((z.shape[1], f.shape[1]))
    info: dict[str, float] = {}
    for j, name in enumerate(names):
        z_tr, z_te, f_tr, f_te = train_test_split(z, f[:, j], test_size=test_size, random_state=seed)
        model = clone(base).fit(z_tr, f_tr)
        importance[:, j] = _importances(model)
        info[name] = float(model.score(z_te, f_te))
    comp = completeness_per_factor(importance)
    return DCIResult(importance, list(names), disentanglement(importance),
                     {n: float(c) for n, c in zip(names, comp)}, info)


def _importances(model: ClassifierMixin) -> np.ndarray:
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=np.float64)
    if hasattr(model, "coef_"):
        return np.abs(np.atleast_2d(model.coef_)).sum(axis=0)
    raise GroupRobustError(f"predictor {type(model).__name__} exposes neither feature_importances_ nor coef_; "
                           "use a tree ensemble or a linear model")
