"""Geometry of linear heads: class-centred weight matrices and the cosine between two heads."""

from __future__ import annotations

import numpy as np

from grouprobust.errors import GroupRobustError


def centered_weights(weight: np.ndarray) -> np.ndarray:
    """The ``(n_classes, dim)`` weight matrix with its mean row subtracted.

    A softmax head is unchanged when the same vector is added to every class row, so only the
    centred matrix carries the head's direction. A 1-D ``weight`` (a direction ``u`` of a binary
    problem, scoring class 1 against class 0) is read as the head ``[-u/2, u/2]``.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        w = np.stack([-w / 2, w / 2])
    if w.ndim != 2:
        raise GroupRobustError(f"a head must be a (classes, dim) matrix or a direction vector, got shape {w.shape}")
    return w - w.mean(axis=0, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine (in [-1, 1]) between two linear heads, compared as flattened class-centred matrices.

    Invariant to positive scaling of either head and to adding a common vector to all class rows.
    Returns NaN when either head is zero.
    """
    ca, cb = centered_weights(a), centered_weights(b)
    if ca.shape != cb.shape:
        raise GroupRobustError(f"cannot compare heads of shapes {ca.shape} and {cb.shape}; "
                               "both must map the same features to the same classes")
    na, nb = np.linalg.norm(ca), np.linalg.norm(cb)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.clip(np.sum(ca * cb) / (na * nb), -1.0, 1.0))
