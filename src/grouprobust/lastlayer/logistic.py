"""`WeightedLogisticRegression`: the GSR inner problem as a stand-alone scikit-learn estimator."""

from __future__ import annotations


from grouprobust.lastlayer._base import LinearHead, native_threads
from grouprobust.lastlayer._multinomial import MultinomialProblem
from grouprobust.lastlayer._validation import check_features, check_weights


class WeightedLogisticRegression(LinearHead):
    """Multinomial logistic regression minimising ``sum_i w_i CE_i + (l2/2) ||W||^2`` to high precision.

    The intercept is not penalised. Solved by Newton's method with backtracking (exact Hessian, in
    kernel form when samples < features, parameter form otherwise) until the Newton decrement is
    below ``tol``; ``warm_start=True`` starts from the previous fit. The objective *sums* the
    weighted losses (``sample_weight=None`` means all ones), so ``l2`` plays the role of
    scikit-learn's ``1 / C``.

    Fitted: ``classes_``, ``coef_`` ``(k, d)``, ``intercept_`` ``(k,)`` (logits sum to zero),
    ``n_hessians_`` (Hessian factorisations used).
    """

    def __init__(self, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-9, hessian_form: str = "auto",
                 warm_start: bool = False):
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.hessian_form = hessian_form
        self.warm_start = warm_start

    @native_threads
    def fit(self, X, y, sample_weight=None) -> "WeightedLogisticRegression":
        """Fit on features ``X`` ``(n, d)``, labels ``y`` and non-negative ``sample_weight``; returns ``self``."""
        X = check_features(X, "X")
        codes = self._encode(y, len(X))
        w = check_weights(sample_weight, len(X))
        problem = MultinomialProblem(X, codes, len(self.classes_), float(self.l2), self.fit_intercept)
        phi0 = getattr(self, "phi_", None) if self.warm_start else None
        if phi0 is not None and phi0.shape != (problem.k - 1, problem.D):
            phi0 = None
        phi, _, _, n_h = problem.fit(w, phi0, tol=float(self.tol), form=self.hessian_form)
        self.phi_ = phi
        self.coef_, self.intercept_ = problem.to_full(phi)
        self.n_hessians_ = n_h
        self.n_features_in_ = X.shape[1]
        return self
