"""Input checks shared by the last-layer estimators; every failure is a one-line `GroupRobustError`."""

from __future__ import annotations

import re

import numpy as np
from sklearn.utils.validation import check_array, column_or_1d

from grouprobust.errors import GroupRobustError


def check_features(X, name: str, n_features: int | None = None, owner: str = "the model") -> np.ndarray:
    """``X`` as a finite float64 ``(n, d)`` array, with ``d == n_features`` when given."""
    try:
        X = check_array(X, dtype=np.float64, ensure_all_finite=True, input_name=name)
    except ValueError as err:
        raise GroupRobustError(f"{name}{_shape(X)}: {_without_values(err)} (pass a finite 2-D samples x features "
                               "array)") from None
    if n_features is not None and X.shape[1] != n_features:
        raise GroupRobustError(f"{name} has {X.shape[1]} features, but {owner} is expecting {n_features} features "
                               "as input; extract all feature sets with the same model")
    return X


def _without_values(err: ValueError, limit: int = 300) -> str:
    """scikit-learn's message in one line, without the array it prints (``array=[...]``) and at most
    ``limit`` characters: an error never prints the data."""
    text = " ".join(re.sub(r"array=\[.*?\]\.?", "", str(err), flags=re.DOTALL).split()).replace(": Reshape", ". Reshape")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shape(X) -> str:
    try:
        return f" of shape {np.shape(X)}"
    except ValueError:  # a ragged nested list has no shape
        return ""


def check_vector(v, n: int, name: str) -> np.ndarray:
    """``v`` as a 1-D array of length ``n``."""
    try:
        v = column_or_1d(v)
    except ValueError:
        raise GroupRobustError(f"{name} must be a 1-D array with one entry per sample; reshape it") from None
    if len(v) != n:
        raise GroupRobustError(f"{name} has {len(v)} entries but there are {n} samples; pass one per sample")
    return v


def check_labels(y, n: int, name: str, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Integer classes ``0..k-1`` (all present unless ``n_classes`` is given); returns ``(y, k)``."""
    y = check_vector(y, n, name)
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0) or (len(y) and y.min() < 0):
        raise GroupRobustError(f"{name} must hold integer classes 0..k-1; encode the labels first (e.g. LabelEncoder)")
    y = y.astype(np.intp)
    if n_classes is None:
        k = int(y.max()) + 1 if len(y) else 0
        missing = sorted(set(range(k)) - set(np.unique(y).tolist()))
        if k < 2 or missing:
            raise GroupRobustError(f"{name} must contain every class 0..k-1 with k >= 2 (missing: {missing or 'a second class'}); "
                                   "re-encode the labels or add samples")
        return y, k
    if len(y) and y.max() >= n_classes:
        raise GroupRobustError(f"{name} has class {int(y.max())} but the model has classes 0..{n_classes - 1}; "
                               "use the same label encoding everywhere")
    return y, n_classes


def check_weights(w, n: int, name: str = "sample_weight") -> np.ndarray:
    """Non-negative finite float64 weights with a positive sum (``None`` means all ones)."""
    if w is None:
        return np.ones(n)
    w = check_vector(w, n, name).astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise GroupRobustError(f"{name} must be finite and non-negative; fix the weights")
    if w.sum() <= 0:
        raise GroupRobustError(f"{name}: the sample weights are all zero; give some samples positive weight")
    return w


def check_groups(groups, n: int, name: str) -> np.ndarray:
    """Integer group ids, one per sample."""
    if groups is None:
        raise GroupRobustError(f"{name} is required (one group id per sample); pass the group labels")
    g = check_vector(groups, n, name)
    if not np.issubdtype(g.dtype, np.number) or not np.all(np.mod(g, 1) == 0):
        raise GroupRobustError(f"{name} must hold integer group ids; encode the groups first")
    return g.astype(np.intp)


def validation_given(owner: str, X_val, y_val, groups_val) -> bool:
    """Whether the validation triple was passed: all three (True) or none (False); a partial triple is a
    one-line error naming ``owner`` (e.g. ``"GSR.fit"``)."""
    given = [v is not None for v in (X_val, y_val, groups_val)]
    if any(given) and not all(given):
        raise GroupRobustError(f"{owner}: pass all of X_val, y_val and groups_val, or none of them")
    return all(given)
