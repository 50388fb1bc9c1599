"""Influence of each sample's weight on an evaluation loss, through the retrained last layer."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._multinomial import Factor, MultinomialProblem
from grouprobust.lastlayer._validation import check_features, check_labels, check_weights


def set_gradients(problem: MultinomialProblem, phi: np.ndarray, X: np.ndarray, y: np.ndarray,
                  members: list[np.ndarray], P: np.ndarray | None = None) -> np.ndarray:
    """Gradients of the mean cross-entropy over each index set in ``members``: ``(m, k-1, D)`` (reduced coordinates).

    ``P`` (the model's probabilities on ``X``) is recomputed when not given.
    """
    if P is None:
        P = softmax(problem.logits(phi, X), axis=1)
    R = P.copy()
    R[np.arange(len(y)), y] -= 1.0
    out = np.empty((len(members), problem.k - 1, problem.D))
    for g, idx in enumerate(members):
        out[g] = problem.reduced_grad(R[idx], X[idx], np.full(len(idx), 1.0 / len(idx)))
    return out


def influence_scores(problem: MultinomialProblem, P: np.ndarray, V: np.ndarray,
                     image: np.ndarray | None = None) -> np.ndarray:
    """``-grad l_i . v_g`` for every sample ``i`` and direction ``V[g]`` ``(m, k-1, D)``: an ``(n, m)`` array.

    With ``V = H^{-1} grad R_g`` these are the exact derivatives ``dR_g / dw_i``; with
    ``V = grad R_g`` the first-order (Hessian-free) scores. ``image`` (``problem.image(V)``, when already
    computed) saves the pass over ``X``.
    """
    S = (P - problem.Y) @ problem.Q  # (n, k-1): per-sample loss gradient in reduced class coordinates
    XV = problem.image(V) if image is None else image
    return -np.einsum("nb,nmb->nm", S, XV)


def exact_influence(problem: MultinomialProblem, P: np.ndarray, factor: Factor, G: np.ndarray) -> np.ndarray:
    """Exact ``dR_g / dw_i = -grad R_g^T H^{-1} grad l_i`` for the set gradients ``G`` ``(m, k-1, D)``: ``(n, m)``."""
    return influence_scores(problem, P, factor.solve(G))


def weight_influence(X, y, sample_weight, X_eval, y_eval, l2: float, fit_intercept: bool = True, *,
                     form: str = "auto", tol: float = 1e-10) -> np.ndarray:
    """Derivative of the evaluation loss of the retrained last layer with respect to each sample weight.

    Let ``theta*(w) = (W*, b*)`` minimise ``sum_i w_i CE(W x_i + b, y_i) + (l2 / 2) ||W||_F^2``
    over a ``k``-class multinomial logistic model (``W`` is ``k x d``; the intercept ``b`` is not
    penalised and is present only if ``fit_intercept``). Returns the array ``(n,)`` with entry ``i``
    equal to ``d/dw_i [ mean_j CE(theta*(w); X_eval[j], y_eval[j]) ]`` evaluated at
    ``w = sample_weight``, i.e. ``-grad R_eval^T H^{-1} grad CE(theta*; x_i, y_i)`` by implicit
    differentiation, where ``H`` is the Hessian of the weighted objective at ``theta*`` (on the
    subspace that changes predictions: the common shift of all intercepts is a flat direction and
    leaves the loss unchanged). Units: evaluation loss (nats) per unit of weight.

    Classes are ``0..k-1`` and all appear in ``y``; ``y_eval`` uses the same classes.
    ``form`` picks the Hessian solve: ``"kernel"`` (n-by-n Woodbury, best when ``n < d``),
    ``"parameter"`` (Cholesky of the ``(k-1)(d+1)``-square Hessian) or ``"auto"``; both give the
    same numbers. ``tol`` is the Newton-decrement tolerance of the inner solve, which then takes one
    more exact Newton step (so both forms land on the same point to rounding).
    """
    X = check_features(X, "X")
    X_eval = check_features(X_eval, "X_eval", n_features=X.shape[1])
    y, k = check_labels(y, len(X), "y")
    y_eval = check_labels(y_eval, len(X_eval), "y_eval", n_classes=k)[0]
    w = check_weights(sample_weight, len(X))
    if not float(l2) > 0:
        raise GroupRobustError(f"l2 must be > 0, got {l2}; the inner problem needs it to be strictly convex")
    problem = MultinomialProblem(X, y, k, float(l2), fit_intercept)
    phi, factor, P, _ = problem.fit(w, tol=tol, form=form, polish=True)
    G = set_gradients(problem, phi, X_eval, y_eval, [np.arange(len(X_eval))])
    return exact_influence(problem, P, factor, G)[:, 0]
