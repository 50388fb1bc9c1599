"""Group-aware scores for scikit-learn model selection: worst-group and group-balanced accuracy.

`worst_group_accuracy(y_true, y_pred, groups=...)` is a plain metric; `worst_group_scorer()` and
`group_balanced_scorer()` wrap the metrics as scorers for ``GridSearchCV``, ``cross_validate`` and
friends. A scorer needs each fold's group labels, which scikit-learn passes only through metadata
routing: call ``sklearn.set_config(enable_metadata_routing=True)`` (or use
``sklearn.config_context``), then ``search.fit(X, y, groups=g)`` /
``cross_validate(..., params={"groups": g})``. The scorers request ``groups``; an estimator that
reads them too (`DFR`) asks for them with ``.set_fit_request(groups=True)``. Only groups present in
the scored fold count (a group without samples there has no accuracy).

    >>> import sklearn
    >>> from sklearn.model_selection import GridSearchCV
    >>> from grouprobust.lastlayer import DFR, worst_group_scorer
    >>> with sklearn.config_context(enable_metadata_routing=True):          # doctest: +SKIP
    ...     search = GridSearchCV(DFR().set_fit_request(groups=True), {"penalty": ["l1", "l2"]},
    ...                           scoring=worst_group_scorer()).fit(X, y, groups=g)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from grouprobust.errors import GroupRobustError
from grouprobust.metrics import group_means


def _group_accuracies(y_true: Any, y_pred: Any, groups: Any) -> np.ndarray:
    """Accuracy (fraction) of each group present in ``groups``, in sorted group order."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if groups is None:
        raise GroupRobustError("a group score needs the group labels: pass groups (in scikit-learn model selection, "
                               "enable metadata routing and pass groups=... to fit / params={'groups': ...})",
                               subject="groups")
    groups = np.asarray(groups)
    if groups.shape != y_true.shape or y_pred.shape != y_true.shape:
        raise GroupRobustError(f"groups ({groups.shape}), y_true ({y_true.shape}) and y_pred ({y_pred.shape}) must "
                               "have one entry per sample", subject="groups")
    if y_true.size == 0:
        raise GroupRobustError("cannot score an empty set of samples", subject="groups")
    ids, index = np.unique(groups, return_inverse=True)
    return group_means(y_true == y_pred, index.ravel(), len(ids))[0]


def worst_group_accuracy(y_true: Any, y_pred: Any, *, groups: Any) -> float:
    """The lowest accuracy (fraction in [0, 1]) over the groups present in ``groups``."""
    return float(_group_accuracies(y_true, y_pred, groups).min())


def group_balanced_accuracy(y_true: Any, y_pred: Any, *, groups: Any) -> float:
    """The mean over the groups present in ``groups`` of their accuracies (fraction in [0, 1])."""
    return float(_group_accuracies(y_true, y_pred, groups).mean())


def _scorer(metric: Callable[..., float]) -> Any:
    import sklearn
    from sklearn.metrics import make_scorer

    if not sklearn.get_config().get("enable_metadata_routing", False):
        raise GroupRobustError("group scorers receive each fold's groups through scikit-learn's metadata routing; "
                               "call sklearn.set_config(enable_metadata_routing=True) first (or build the scorer "
                               "inside sklearn.config_context(enable_metadata_routing=True))",
                               subject="enable_metadata_routing")
    return make_scorer(metric).set_score_request(groups=True)


def worst_group_scorer() -> Any:
    """A scikit-learn scorer of `worst_group_accuracy` (greater is better) that requests ``groups``.

    Needs metadata routing enabled (see the module docstring); raises `GroupRobustError` otherwise.
    """
    return _scorer(worst_group_accuracy)


def group_balanced_scorer() -> Any:
    """A scikit-learn scorer of `group_balanced_accuracy` (greater is better) that requests ``groups``."""
    return _scorer(group_balanced_accuracy)


__all__ = ["group_balanced_accuracy", "group_balanced_scorer", "worst_group_accuracy", "worst_group_scorer"]
