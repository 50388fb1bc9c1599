"""GSR's fast stage 2 (preconditioned parameter form, dual kernel form) against the reference algorithm
(tests/gsr_reference.py) and direct solves."""

import numpy as np
import pytest

from grouprobust.lastlayer import GSR
from grouprobust.lastlayer import gsr as gsr_module
from grouprobust.lastlayer import _multinomial as multinomial
from grouprobust.lastlayer._multinomial import REBUILD_EXCESS, RHO_FRESH, DualKernelProblem, MultinomialProblem, Preconditioner
from grouprobust.lastlayer.influence import influence_scores, set_gradients
import gsr_reference


def spurious(n, d, p_agree, rng, dirs):
    core, spur = dirs
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < p_agree, y, 1 - y)
    X = rng.standard_normal((n, d)) + np.outer(2 * y - 1, core) * 1.2 + np.outer(2 * a - 1, spur) * 3
    return np.maximum(X, 0.0), y, 2 * y + a


@pytest.mark.parametrize("n, d, head", [(60, 150, "_DualHead"), (400, 20, "_PrimalHead")])
def test_gsr_weight_trajectory_matches_the_reference_algorithm_at_every_step(n, d, head, monkeypatch):
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
def test_preconditioned_influence_equals_a_direct_solve(k, monkeypatch):
    # this jump of the weights would make the rule rebuild the preconditioner: keep the previous one, whose
    # conjugate-gradient path is what is tested here
    monkeypatch.setattr(multinomial, "REBUILD_EXCESS", 100)
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


@pytest.mark.parametrize("k", [2, 3])
def test_folded_standardisation_equals_the_problem_on_standardised_copies(k):
    rng = np.random.default_rng(20 + k)
    X = rng.normal(loc=5.0, scale=3.0, size=(200, 9))
    Xe = rng.normal(loc=5.0, scale=3.0, size=(30, 9))
    y, w = np.arange(200) % k, rng.uniform(0.2, 1.0, 200) / 200
    mean, scale = X.mean(axis=0), X.std(axis=0)
    folded = MultinomialProblem(X, y, k, 0.05, center=mean, scale=scale)
    copied = MultinomialProblem((X - mean) / scale, y, k, 0.05)
    assert folded.X is X or np.shares_memory(folded.X, X)  # the held-out matrix is not copied
    phi = rng.normal(size=(k - 1, 10))
    np.testing.assert_allclose(folded.logits(phi, Xe), copied.logits(phi, (Xe - mean) / scale), rtol=1e-12, atol=1e-12)
    R = rng.normal(size=(30, k))
    np.testing.assert_allclose(folded.reduced_grad(R, Xe, np.ones(30)), copied.reduced_grad(R, (Xe - mean) / scale,
                               np.ones(30)), rtol=1e-11, atol=1e-11)
    P = np.exp(copied.logits(phi)) / np.exp(copied.logits(phi)).sum(axis=1, keepdims=True)
    B = copied.curvature(P, w)
    V = rng.normal(size=(2, k - 1, 10))
    np.testing.assert_allclose(folded.hess_vec(B, V), copied.hess_vec(B, V), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(folded.hessian_matrix(B), copied.hessian_matrix(B), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(folded.hess_vec(B, V, single=True), copied.hess_vec(B, V), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(folded.fit(w, tol=1e-11)[0], copied.fit(w, tol=1e-11)[0], atol=1e-8)


def test_cg_reports_the_smallest_ritz_value_from_above():
    from grouprobust.lastlayer._multinomial import pcg

    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    eig = np.linspace(0.3, 4.0, 12)
    H = (Q * eig) @ Q.T
    g = rng.normal(size=(1, 12))
    x, it, ok, ritz = pcg(lambda V: V @ H, lambda R: R, g, 1e-12, 40)
    assert ok and np.allclose(x[0], np.linalg.solve(H, g[0]), atol=1e-9)
    assert ritz == pytest.approx(eig[0], rel=1e-6)  # a full Krylov space finds the smallest eigenvalue
    _, _, _, early = pcg(lambda V: V @ H, lambda R: R, g, 1e-12, 3)
    assert early >= eig[0] - 1e-12  # a partial one estimates it from above


def test_gsr_keeps_the_standardised_problem_without_copying_the_held_out_features(monkeypatch):
    rng = np.random.default_rng(8)
    dirs = rng.standard_normal(20) / np.sqrt(20), rng.standard_normal(20) / np.sqrt(20)
    X, y, _ = spurious(400, 20, 0.9, rng, dirs)
    Xt, yt, gt = spurious(100, 20, 0.5, rng, dirs)
    problems = []
    original = gsr_module.MultinomialProblem.__init__

    def record(self, X_, *args, **kwargs):
        problems.append(X_)
        original(self, X_, *args, **kwargs)

    monkeypatch.setattr(gsr_module.MultinomialProblem, "__init__", record)
    GSR(n_steps=2).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt)
    assert len(problems) == 1 and np.shares_memory(problems[0], X)


@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_the_estimated_decrement_stops_only_below_tol(tol):
    """With a stale preconditioner the fit stops on g^T M^{-1} g over a Ritz estimate; check it against the
    exact Newton decrement (a float64 factor at the returned point)."""
    rng = np.random.default_rng(31)
    X, y = rng.normal(size=(500, 15)), np.arange(500) % 2
    w1 = rng.uniform(0.5, 1.5, 500) / 500
    problem = MultinomialProblem(X, y, 2, 0.05)
    phi, factor, _, _ = problem.fit(w1, form="parameter")
    stale = 0
    for scale in (0.6, 0.9, 1.3):
        w2 = w1 * rng.uniform(min(scale, 1 / scale), max(scale, 1 / scale), 500)
        phi2, _, P, builds = problem.fit(w2, phi, factor, tol=tol, form="parameter")
        grad = problem.value_grad(phi2, w2)[1]
        exact = problem.factorize(phi2, w2, P, "parameter").solve(grad[None])[0]
        assert np.sqrt(np.sum(grad * exact) / w2.sum()) <= tol
        stale += builds == 0
    assert stale  # at least one fit stopped on the estimate with the old factor


def test_preconditioner_inverse_equals_the_solves_of_its_factor():
    rng = np.random.default_rng(41)
    X, y = rng.normal(size=(400, 10)), np.arange(400) % 3
    problem = MultinomialProblem(X, y, 3, 0.05)
    w = rng.uniform(0.5, 1.5, 400) / 400
    phi, _, P, _ = problem.fit(w, form="parameter")
    B = problem.curvature(P, w)
    pre = problem.preconditioner(B)
    G = rng.normal(size=(3, 2, problem.D))
    H32 = problem.hessian_matrix(B, single=True)  # the float32-built Hessian the preconditioner inverts
    want = np.linalg.solve(H32, G.reshape(3, -1).T).T.reshape(G.shape)
    np.testing.assert_allclose(problem.cho_apply(pre, G), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pre.inverse, pre.inverse.T)


def test_preconditioner_goes_stale_on_slow_runs_only():
    pre = Preconditioner(np.eye(3))
    fresh = int(np.ceil(np.log(1e-6) / np.log(RHO_FRESH)))
    for _ in range(10):
        pre.charge(fresh, 1e-6)  # at a fresh preconditioner's rate: costs nothing extra
    assert pre.excess == 0 and not pre.stale
    slow_runs = 0
    while not pre.stale and slow_runs < 100:
        pre.charge(fresh + 3, 1e-6)  # three iterations more than a fresh one needs
        slow_runs += 1
    assert pre.stale and slow_runs == -(-REBUILD_EXCESS // 3)


def test_a_stale_preconditioner_is_rebuilt_at_the_next_fit():
    rng = np.random.default_rng(43)
    X, y = rng.normal(size=(500, 15)), np.arange(500) % 2
    w1 = rng.uniform(0.5, 1.5, 500) / 500
    w2 = w1 * rng.uniform(0.9, 1.1, 500)
    problem = MultinomialProblem(X, y, 2, 0.05)
    phi, factor, _, _ = problem.fit(w1, form="parameter")
    assert isinstance(factor.chol, Preconditioner) and not factor.chol.stale
    kept = problem.fit(w2, phi, factor, form="parameter")
    assert kept[3] == 0 and kept[1].chol is factor.chol  # fresh enough: reused
    factor.chol.excess = REBUILD_EXCESS
    rebuilt = problem.fit(w2, phi, factor, form="parameter")
    assert rebuilt[3] == 1 and rebuilt[1].chol is not factor.chol
    np.testing.assert_allclose(rebuilt[0], kept[0], rtol=0, atol=1e-8)


@pytest.mark.parametrize("k", [2, 3, 8, 9])
def test_log_softmax_rows_equals_scipys_for_any_number_of_classes(k):
    from scipy.special import log_softmax

    rng = np.random.default_rng(k)
    z = rng.standard_normal((500, k)) * 30.0
    z[0] = 800.0  # equal huge logits: exp would overflow without the row maximum
    z[1, 0] = -800.0
    out = multinomial.log_softmax_rows(z)
    np.testing.assert_allclose(out, log_softmax(z, axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-13)
    assert np.isfinite(out).all()
