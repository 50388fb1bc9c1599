"""Last-layer retraining without training group labels: `AFR` and `SELF`.

Both start from a *base head* (the stage-1 ERM model's last layer, ``init_coef`` ``(k, d)`` and
``init_intercept`` ``(k,)`` on raw features) and retrain it on held-out samples that carry class
labels only; group labels are read only by the optional validation triple, to choose the
estimator's own hyper-parameters (through `grouprobust.selection`, the project's one selection rule).

* `AFR` (automatic feature reweighting, Qiu et al. 2023): each held-out sample gets the weight
  ``exp(-gamma * p_i)``, ``p_i`` the base head's probability of its true class, normalised so every
  class has the same total weight; the head minimises the weighted cross-entropy plus ``reg`` times
  the distance to the base head (``penalty="l2"``: squared Euclidean, as in the paper's
  regularisation towards the ERM head; ``"l1"``: absolute). ``gamma`` and ``reg`` are chosen from
  ``gammas`` x ``regs`` by validation worst-group accuracy.
* `SELF` (selective last-layer finetuning, LaBonte et al. 2024): the retraining set is the held-out
  samples where the base head and an *early-stopped* head disagree; the head is then retrained,
  class-balanced, on that set (plus, if it is smaller than ``min_size``, the least confident
  samples). The early-stopped head here is the base head after ``early_steps`` full-batch gradient
  steps of class-balanced cross-entropy on the held-out set (the paper's early-stopped model is an
  early checkpoint of ERM training, which the two-stage protocol does not keep); it is documented
  as such.

Both solve their convex problems with L-BFGS-B (scipy) to ``tol``; both are scikit-learn
estimators (`LinearHead`: ``predict``, ``predict_proba``, ``decision_function``, ``get_params``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._base import LinearHead, native_threads
from grouprobust.lastlayer._validation import check_features, check_groups, check_weights, validation_given
from grouprobust.lastlayer.scoring import worst_group_accuracy
from grouprobust.params import NON_NEGATIVE, POSITIVE, Choice, Interval
from grouprobust.selection import select_best_index, selection_key


def class_balanced(weights: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """``weights`` rescaled so every class present has the same total (the weights sum to 1)."""
    totals = np.bincount(codes, weights=weights, minlength=k)
    present = totals > 0
    out = weights / np.where(present, totals, 1.0)[codes]
    return out / present.sum()


def fit_anchored_head(X: np.ndarray, codes: np.ndarray, k: int, w: np.ndarray, coef0: np.ndarray,
                      intercept0: np.ndarray, reg: float, penalty: str = "l2", tol: float = 1e-8,
                      max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``argmin_theta sum_i w_i CE(theta; x_i, y_i) + reg * D(W, W0)`` started at the anchor ``(coef0,
    intercept0)``, where ``D`` is ``||W - W0||^2`` (``l2``) or ``|W - W0|_1`` (``l1``; the intercept is
    never penalised). Returns ``(coef (k, d), intercept (k,))``. ``l1`` is solved exactly as a
    bound-constrained smooth problem (``W - W0 = U - V``, ``U, V >= 0``)."""
    n, d = X.shape
    Y = np.eye(k)[codes]

    def data_term(W: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        Z = X @ W.T + b
        logp = log_softmax(Z, axis=1)
        R = (np.exp(logp) - Y) * w[:, None]
        return float(-(w * (logp * Y).sum(axis=1)).sum()), R.T @ X, R.sum(axis=0)

    if penalty == "l2":
        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = theta[:k * d].reshape(k, d), theta[k * d:]
            f, gW, gb = data_term(W, b)
            delta = W - coef0
            return f + reg * float((delta ** 2).sum()), np.concatenate([(gW + 2 * reg * delta).ravel(), gb])

        start = np.concatenate([coef0.ravel(), intercept0])
        res = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": tol})
        return res.x[:k * d].reshape(k, d), res.x[k * d:]

    def objective_l1(theta: np.ndarray) -> tuple[float, np.ndarray]:
        U, V, b = theta[:k * d].reshape(k, d), theta[k * d:2 * k * d].reshape(k, d), theta[2 * k * d:]
        f, gW, gb = data_term(coef0 + U - V, b)
        return f + reg * float(U.sum() + V.sum()), np.concatenate([(gW + reg).ravel(), (-gW + reg).ravel(), gb])

    start = np.concatenate([np.zeros(2 * k * d), intercept0])
    bounds = [(0, None)] * (2 * k * d) + [(None, None)] * k
    res = minimize(objective_l1, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": max_iter, "gtol": tol})
    U, V = res.x[:k * d].reshape(k, d), res.x[k * d:2 * k * d].reshape(k, d)
    return coef0 + U - V, res.x[2 * k * d:]


class _AnchoredHead(LinearHead):
    """Shared input handling: held-out ``(X, y)``, the base head, and the optional validation triple."""

    def _inputs(self, X, y, init_coef, init_intercept, X_val, y_val, groups_val):
        X = check_features(X, "X")
        codes = self._encode(y, len(X))
        k, d = len(self.classes_), X.shape[1]
        if init_coef is None or init_intercept is None:
            raise GroupRobustError(f"{type(self).__name__}.fit needs the base head: pass init_coef (k, d) and "
                                   "init_intercept (k,) of the stage-1 model's last layer")
        coef0 = np.asarray(init_coef, dtype=np.float64)
        intercept0 = np.asarray(init_intercept, dtype=np.float64).ravel()
        if coef0.shape != (k, d) or intercept0.shape != (k,):
            raise GroupRobustError(f"{type(self).__name__}: the base head has shape {coef0.shape} / {intercept0.shape} "
                                   f"but the data have {k} classes and {d} features; pass the stage-1 model's head")
        has_val = validation_given(f"{type(self).__name__}.fit", X_val, y_val, groups_val)
        val = None
        if has_val:
            Xv = check_features(X_val, "X_val", n_features=d)
            val = (Xv, self._encode_more(y_val, len(Xv), "y_val"), check_groups(groups_val, len(Xv), "groups_val"))
        return X, codes, k, coef0, intercept0, val

    @staticmethod
    def _score(val, coef: np.ndarray, intercept: np.ndarray) -> tuple[float, float] | None:
        """The selection key (validation worst-group accuracy, then average accuracy) of a head."""
        Xv, yv, gv = val
        pred = np.argmax(Xv @ coef.T + intercept, axis=1)
        return selection_key(worst_group_accuracy(yv, pred, groups=gv), float(np.mean(pred == yv)))


class AFR(_AnchoredHead):
    """Automatic feature reweighting (see the module docstring).

    ``fit(X, y, *, init_coef, init_intercept, X_val=None, y_val=None, groups_val=None)``: ``(X, y)``
    are held-out features and labels (no groups). Without the validation triple the first of
    ``gammas`` and ``regs`` is used. Fitted: ``coef_``, ``intercept_``, ``classes_``, ``gamma_``,
    ``reg_``, ``weights_`` (the selected sample weights, summing to 1), ``cv_scores_``
    (``{(gamma, reg): validation worst-group accuracy}``).
    """

    parameter_constraints = {"gammas": NON_NEGATIVE, "regs": NON_NEGATIVE, "penalty": Choice(("l1", "l2")),
                             "tol": POSITIVE, "max_iter": Interval(1)}

    def __init__(self, gammas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 14.0), regs: tuple[float, ...] = (0.0, 0.1,
                 0.2, 0.5), penalty: str = "l2", tol: float = 1e-8, max_iter: int = 500, random_state: Any = None):
        self.gammas = gammas
        self.regs = regs
        self.penalty = penalty
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def sample_weights(self, X: np.ndarray, codes: np.ndarray, coef0: np.ndarray, intercept0: np.ndarray,
                       gamma: float) -> np.ndarray:
        """AFR's weights ``exp(-gamma p_i)``, class-balanced, summing to 1 (``p_i``: the base head's
        probability of sample ``i``'s true class)."""
        p = softmax(X @ coef0.T + intercept0, axis=1)[np.arange(len(codes)), codes]
        return class_balanced(np.exp(-gamma * p), codes, len(self.classes_))

    @native_threads
    def fit(self, X, y, *, init_coef=None, init_intercept=None, X_val=None, y_val=None, groups_val=None) -> "AFR":
        """Retrain the head on ``(X, y)`` with AFR's weights; returns ``self``."""
        self._check_params()
        X, codes, k, coef0, intercept0, val = self._inputs(X, y, init_coef, init_intercept, X_val, y_val, groups_val)
        grid = [(float(g), float(r)) for g in np.atleast_1d(self.gammas) for r in np.atleast_1d(self.regs)]
        if val is None:
            grid = grid[:1]
        fits, keys, scores = [], [], {}
        for gamma, reg in grid:
            w = self.sample_weights(X, codes, coef0, intercept0, gamma)
            coef, intercept = fit_anchored_head(X, codes, k, w, coef0, intercept0, reg, self.penalty,
                                                float(self.tol), int(self.max_iter))
            fits.append((gamma, reg, w, coef, intercept))
            if val is not None:
                keys.append(self._score(val, coef, intercept))
                scores[(gamma, reg)] = keys[-1][0]
        best = select_best_index(keys) if val is not None else 0
        self.gamma_, self.reg_, self.weights_, self.coef_, self.intercept_ = fits[best]
        self.cv_scores_ = scores
        self.n_features_in_ = X.shape[1]
        return self


class SELF(_AnchoredHead):
    """Selective last-layer finetuning on early-stop disagreements (see the module docstring).

    ``fit(X, y, *, init_coef, init_intercept, X_val=None, y_val=None, groups_val=None)``. The
    retrained head minimises the class-balanced cross-entropy on the retraining set plus
    ``l2 * ||W||^2`` for each ``l2`` in ``l2s`` (chosen on the validation triple when given, else the
    first). Fitted: ``coef_``, ``intercept_``, ``classes_``, ``selected_`` (indices of the retraining
    set into ``X``), ``n_disagree_`` (how many of them are disagreements), ``l2_``, ``cv_scores_``.
    """

    parameter_constraints = {"early_steps": Interval(1), "early_lr": POSITIVE, "min_size": Interval(2),
                             "l2s": NON_NEGATIVE, "tol": POSITIVE, "max_iter": Interval(1)}

    def __init__(self, early_steps: int = 20, early_lr: float = 1.0, min_size: int = 20,
                 l2s: tuple[float, ...] = (1e-3, 1e-2, 1e-1), tol: float = 1e-8, max_iter: int = 500,
                 random_state: Any = None):
        self.early_steps = early_steps
        self.early_lr = early_lr
        self.min_size = min_size
        self.l2s = l2s
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def early_stopped_head(self, X: np.ndarray, codes: np.ndarray, coef0: np.ndarray,
                           intercept0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The base head after ``early_steps`` full-batch gradient steps (step ``early_lr``) of
        class-balanced cross-entropy on ``(X, codes)``."""
        k = len(self.classes_)
        w = class_balanced(np.ones(len(codes)), codes, k)
        Y = np.eye(k)[codes]
        W, b = coef0.copy(), intercept0.copy()
        for _ in range(int(self.early_steps)):
            R = (softmax(X @ W.T + b, axis=1) - Y) * w[:, None]
            W -= float(self.early_lr) * (R.T @ X)
            b -= float(self.early_lr) * R.sum(axis=0)
        return W, b

    def retraining_set(self, X: np.ndarray, codes: np.ndarray, coef0: np.ndarray, intercept0: np.ndarray
                       ) -> tuple[np.ndarray, int]:
        """``(indices, n_disagree)``: the samples where base and early-stopped heads predict differently,
        topped up with the base head's least confident samples to at least ``min_size``."""
        W, b = self.early_stopped_head(X, codes, coef0, intercept0)
        base = X @ coef0.T + intercept0
        disagree = np.flatnonzero(np.argmax(base, axis=1) != np.argmax(X @ W.T + b, axis=1))
        chosen = set(disagree.tolist())
        if len(chosen) < int(self.min_size):
            conf = softmax(base, axis=1)[np.arange(len(codes)), codes]
            for i in np.argsort(conf, kind="stable"):
                if len(chosen) >= int(self.min_size):
                    break
                chosen.add(int(i))
        return np.array(sorted(chosen), dtype=np.int64), len(disagree)

    @native_threads
    def fit(self, X, y, *, init_coef=None, init_intercept=None, X_val=None, y_val=None, groups_val=None) -> "SELF":
        """Retrain the head, class-balanced, on the early-stop disagreement set; returns ``self``."""
        self._check_params()
        X, codes, k, coef0, intercept0, val = self._inputs(X, y, init_coef, init_intercept, X_val, y_val, groups_val)
        idx, n_disagree = self.retraining_set(X, codes, coef0, intercept0)
        if len(np.unique(codes[idx])) < k:
            raise GroupRobustError("SELF: the retraining set lacks a class; raise min_size or early_steps")
        w = class_balanced(check_weights(None, len(idx)), codes[idx], k)
        l2s = [float(v) for v in np.atleast_1d(self.l2s)]
        fits, keys, scores = [], [], {}
        for l2 in (l2s if val is not None else l2s[:1]):
            zero = np.zeros_like(coef0)
            coef, intercept = fit_anchored_head(X[idx], codes[idx], k, w, zero, np.zeros(k), l2, "l2",
                                                float(self.tol), int(self.max_iter))
            fits.append((l2, coef, intercept))
            if val is not None:
                keys.append(self._score(val, coef, intercept))
                scores[l2] = keys[-1][0]
        best = select_best_index(keys) if val is not None else 0
        self.l2_, self.coef_, self.intercept_ = fits[best]
        self.selected_, self.n_disagree_, self.cv_scores_ = idx, n_disagree, scores
        self.n_features_in_ = X.shape[1]
        return self
