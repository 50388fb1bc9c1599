"""GSR's fast stage 2 (preconditioned parameter form, dual kernel form) against today's algorithm and direct solves."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from grouprobust.lastlayer import GSR
from grouprobust.lastlayer import gsr as gsr_module
from grouprobust.lastlayer._multinomial import DualKernelProblem, MultinomialProblem
from grouprobust.lastlayer.influence import influence_scores, set_gradients

_spec = importlib.util.spec_from_file_location(
    "gsr_reference", Path(__file__).resolve().parents[1] / "benchmarks" / "gsr_reference.py")
gsr_reference = sys.modules.setdefault("gsr_reference", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(gsr_reference)


def spurious(n, d, p_agree, rng, dirs):
    core, spur = dirs
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < p_agree, y, 1 - y)
    X = rng.standard_normal((n, d)) + np.outer(2 * y - 1, core) * 1.2 + np.outer(2 * a - 1, spur) * 3
    return np.maximum(X, 0.0), y, 2 * y + a


@pytest.mark.parametrize("n, d, head", [(60, 150, "_DualHead"), (400, 20, "_PrimalHead")])
def test_gsr_weight_trajectory_matches_todays_algorithm_at_every_step(n, d, head, monkeypatch):
    rng = np.random.default_rng(3)
    dirs = rng.standard_normal(d) / np.sqrt(d), rng.standard_normal(d) / np.sqrt(d)
    X, y, _ = spurious(n, d, 0.9, rng, dirs)
    Xt, yt, gt = spurious(300, d, 0.5, rng, dirs)
    seen, heads = [], []
    for cls in (gsr_module._PrimalHead, gsr_module._DualHead):
        def fit(self, w, _orig=cls.fit):
            seen.append(w.copy())
            heads.append(type(self).__name__)
            return _orig(self, w)
        monkeypatch.setattr(cls, "fit", fit)
    model = GSR(n_steps=15).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)
    ref, ref_hessians = gsr_reference.reference_weights(X, y, Xt, yt, gt, n_steps=15)
    assert set(heads) == {head} and len(seen) == len(ref) == 16
    moved = max(np.abs(r - ref[0]).max() for r in ref) * n
    assert moved > 0.1  # the weights really move (in units of the mean weight)
    worst = max(np.abs(a - b).max() for a, b in zip(seen, ref)) * n
    assert worst <= 1e-6
    if head == "_PrimalHead":  # the previous step's factor preconditions: far fewer Hessians than steps
        assert sum(e["n_hessians"] for e in model.history_) < ref_hessians / 2


@pytest.mark.parametrize("k", [2, 3])
def test_preconditioned_influence_equals_a_direct_solve(k):
    rng = np.random.default_rng(k)
    X, y = rng.normal(size=(300, 12)), np.arange(300) % k
    Xe, ye = rng.normal(size=(40, 12)), rng.integers(0, k, 40)
    w1 = rng.uniform(0.5, 1.5, 300) / 300
    w2 = w1 * rng.uniform(0.7, 1.3, 300)
    problem = MultinomialProblem(X, y, k, 0.05)
    phi, factor, _, _ = problem.fit(w1, form="parameter")
    phi, factor, P, builds = problem.fit(w2, phi, factor, form="parameter")
    assert builds == 0 and not factor.exact  # conjugate gradients on the previous Hessian's factor
    G = set_gradients(problem, phi, Xe, ye, [np.arange(20), np.arange(20, 40)])
    fast = influence_scores(problem, P, factor.solve(G, rtol=1e-8))
    exact = influence_scores(problem, P, problem.factorize(phi, w2, P, "parameter").solve(G))
    assert np.abs(fast - exact).max() <= 1e-6 * np.abs(exact).max()
    assert np.abs(problem.value_grad(phi, w2)[1]).max() < 1e-8  # and the Newton solve converged


@pytest.mark.parametrize("k, fit_intercept", [(2, True), (3, True), (3, False)])
def test_dual_kernel_problem_reaches_the_primal_solution_and_influence(k, fit_intercept):
    rng = np.random.default_rng(10 + k)
    X, y = rng.normal(size=(30, 80)), np.arange(30) % k
    Xe, ye = rng.normal(size=(25, 80)), rng.integers(0, k, 25)
    w = rng.uniform(0.0, 1.0, 30) / 30
    problem = MultinomialProblem(X, y, k, 0.1, fit_intercept)
    phi, factor, P, _ = problem.fit(w, tol=1e-11, polish=True)
    dual = DualKernelProblem(problem)
    state, solve, P_dual, _ = dual.fit(w, tol=1e-11)
    np.testing.assert_allclose(dual.to_phi(*state), phi, atol=1e-8)
    G = set_gradients(problem, phi, Xe, ye, [np.arange(25)])
    exact = influence_scores(problem, P, factor.solve(G))[:, 0]
    # the dual path's influence: through the image X g of the evaluation gradient
    Pe = np.exp(problem.logits(dual.to_phi(*state), Xe))
    Pe /= Pe.sum(axis=1, keepdims=True)
    R = Pe - np.eye(k)[ye]
    Ct = (R / 25) @ problem.Q
    gc = Ct.sum(axis=0) if fit_intercept else np.zeros(k - 1)
    img, vc, _ = solve((Xe @ X.T).T @ Ct, gc)
    dual_scores = -np.sum(((P_dual - problem.Y) @ problem.Q) * (img + vc), axis=1)
    np.testing.assert_allclose(dual_scores, exact, rtol=1e-6, atol=1e-9 * np.abs(exact).max())
