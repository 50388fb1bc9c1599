"""Exactness of the last-layer solver and of `weight_influence` against independent computations."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.linear_model import LogisticRegression

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer import WeightedLogisticRegression, weight_influence
from grouprobust.lastlayer._multinomial import MultinomialProblem
from grouprobust.lastlayer.influence import influence_scores, set_gradients


def reference_fit(X, y, w, l2, k, fit_intercept):
    """Independent solve in the full k x (d+1) parametrisation: scipy trust-region Newton-CG, tight tolerance."""
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    D = Xa.shape[1]
    pen = np.ones((k, D))
    if fit_intercept:
        pen[:, -1] = 0.0
    Y = np.eye(k)[y]

    def f(t):
        T = t.reshape(k, D)
        lp = log_softmax(Xa @ T.T, axis=1)
        R = (np.exp(lp) - Y) * w[:, None]
        return -np.sum(w * lp[np.arange(n), y]) + 0.5 * l2 * np.sum((pen * T) ** 2), (R.T @ Xa + l2 * pen * T).ravel()

    def hessp(t, v):
        P = softmax(Xa @ t.reshape(k, D).T, axis=1)
        U = Xa @ v.reshape(k, D).T
        AU = P * U - P * np.sum(P * U, axis=1, keepdims=True)
        return ((AU * w[:, None]).T @ Xa + l2 * pen * v.reshape(k, D)).ravel()

    res = minimize(f, np.zeros(k * D), jac=True, hessp=hessp, method="trust-ncg", options={"gtol": 1e-13, "maxiter": 500})
    return res.x.reshape(k, D), Xa


def eval_loss(theta, X, y, fit_intercept):
    Xa = np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X
    return -log_softmax(Xa @ theta.T, axis=1)[np.arange(len(y)), y].mean()


def problem_data(k, n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.permutation(np.arange(n) % k)
    return X, y, rng.normal(size=(25, d)), rng.integers(0, k, 25), rng.uniform(0.5, 1.5, n)


@pytest.mark.parametrize("k, n, d, fit_intercept", [(3, 30, 5, True), (2, 20, 40, True), (3, 30, 5, False),
                                                    (2, 12, 30, False)])
def test_weight_influence_matches_finite_difference_retraining(k, n, d, fit_intercept):
    X, y, Xe, ye, w = problem_data(k, n, d, seed=k + n)
    l2 = 0.3
    got = weight_influence(X, y, w, Xe, ye, l2, fit_intercept)
    eps = 1e-4
    fd = np.empty(n)
    for i in range(n):
        e = np.zeros(n)
        e[i] = eps
        up = eval_loss(reference_fit(X, y, w + e, l2, k, fit_intercept)[0], Xe, ye, fit_intercept)
        down = eval_loss(reference_fit(X, y, w - e, l2, k, fit_intercept)[0], Xe, ye, fit_intercept)
        fd[i] = (up - down) / (2 * eps)
    assert np.max(np.abs(got - fd)) <= 1e-3 * np.max(np.abs(fd))
    assert np.max(np.abs(fd)) > 1e-3  # the comparison is not vacuous


@pytest.mark.parametrize("k, n, d", [(2, 40, 8), (2, 10, 50), (4, 25, 12), (3, 8, 40)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_kernel_form_equals_parameter_form(k, n, d, fit_intercept):
    X, y, Xe, ye, w = problem_data(k, n, d, seed=7 * k + d)
    w[:3] = 0.0  # zero weights are allowed and must not break the Woodbury form
    kernel = weight_influence(X, y, w, Xe, ye, 0.05, fit_intercept, form="kernel")
    param = weight_influence(X, y, w, Xe, ye, 0.05, fit_intercept, form="parameter")
    np.testing.assert_allclose(kernel, param, rtol=1e-8, atol=1e-10 * np.abs(param).max())


def test_first_order_scores_are_plain_gradient_inner_products():
    k, n, d = 3, 20, 6
    X, y, Xe, ye, w = problem_data(k, n, d, seed=3)
    problem = MultinomialProblem(X, y, k, 0.1)
    phi, _, P, _ = problem.fit(w)
    G = set_gradients(problem, phi, Xe, ye, [np.arange(len(ye))])
    scores = influence_scores(problem, P, G)[:, 0]
    # the same inner products in the full k x (d+1) parametrisation
    coef, intercept = problem.to_full(phi)
    Xa, Xea = np.hstack([X, np.ones((n, 1))]), np.hstack([Xe, np.ones((len(Xe), 1))])
    Pe = softmax(Xe @ coef.T + intercept, axis=1)
    g_eval = (Pe - np.eye(k)[ye]).T @ Xea / len(ye)
    per_sample = np.einsum("nk,nj->nkj", P - np.eye(k)[y], Xa)
    np.testing.assert_allclose(scores, -np.einsum("nkj,kj->n", per_sample, g_eval), rtol=1e-10, atol=1e-12)


def test_head_matches_sklearn_multinomial_logistic_regression():
    X, y, _, _, _ = problem_data(3, 60, 5, seed=11)
    C = 0.5  # sklearn minimises C * sum CE + ||W||^2 / 2, i.e. weights 1 and l2 = 1 / C
    ours = WeightedLogisticRegression(l2=1 / C).fit(X, y, sample_weight=np.ones(len(y)))
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5)


def test_warm_start_reaches_the_same_solution_with_fewer_hessians():
    X, y, _, _, w = problem_data(2, 200, 10, seed=5)
    cold = WeightedLogisticRegression(l2=0.01).fit(X, y, sample_weight=w)
    model = WeightedLogisticRegression(l2=0.01, warm_start=True).fit(X, y, sample_weight=w * 1.01)
    model.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(model.coef_, cold.coef_, atol=1e-7)
    assert model.n_hessians_ <= cold.n_hessians_


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "y": np.where(a["y"] == 1, 2, a["y"])}, "every class"),
    (lambda a: {**a, "sample_weight": -a["sample_weight"]}, "non-negative"),
    (lambda a: {**a, "X_eval": a["X_eval"][:, :-1]}, "features"),
    (lambda a: {**a, "y_eval": a["y_eval"] + 5}, "class"),
    (lambda a: {**a, "X": np.where(np.eye(*a["X"].shape) > 0, np.nan, a["X"])}, "X"),
    (lambda a: {**a, "l2": 0.0}, "l2"),
    (lambda a: {**a, "sample_weight": a["sample_weight"][:-1]}, "entries"),
])
def test_weight_influence_rejects_bad_input_with_one_line(change, message):
    X, y, Xe, ye, w = problem_data(3, 30, 5, seed=1)
    args = change({"X": X, "y": y, "sample_weight": w, "X_eval": Xe, "y_eval": ye, "l2": 0.1})
    with pytest.raises(GroupRobustError, match=message) as err:
        weight_influence(**args)
    assert "\n" not in str(err.value)


def test_unknown_hessian_form_is_an_error():
    X, y, Xe, ye, w = problem_data(2, 10, 3, seed=2)
    with pytest.raises(GroupRobustError, match="Hessian form"):
        weight_influence(X, y, w, Xe, ye, 0.1, form="dense")
