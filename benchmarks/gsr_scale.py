"""GSR stage-2 runtime at the shapes of the paper's Table 5, on synthetic features.

Prints, per shape: total wall and CPU seconds for the full GSR run (``grouprobust.lastlayer.GSR``), its
peak memory, and the ratio against a straightforward dense implementation measured in the
same run (full-parameter Hessian built from per-sample outer products, ``numpy.linalg.pinv``,
``n x p`` per-sample gradient matrix, inner problem by scipy L-BFGS). The dense reference runs
a few outer steps only (at a reduced held-out size for CivilComments, where it is too slow);
the ratio compares CPU seconds per outer step at the same shape (CPU time, because the
machine may be shared), and the two implementations'
influence scores are checked to agree.

Usage: ``python benchmarks/gsr_scale.py [--only waterbirds|civilcomments] [--dense-steps 3]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import log_softmax, softmax  # noqa: E402

from grouprobust.lastlayer import GSR  # noqa: E402
from grouprobust.lastlayer._base import Standardizer  # noqa: E402
from grouprobust.lastlayer._multinomial import MultinomialProblem  # noqa: E402
from grouprobust.lastlayer.influence import exact_influence, set_gradients  # noqa: E402

SHAPES = {
    # name: (held-out n, features d, target n, classes, outer steps, dense reference n, paper total seconds)
    "waterbirds": (479, 2048, 600, 2, 100, 479, 285.0),
    "civilcomments": (26_903, 768, 22_590, 2, 50, 2_000, 882.0),
}


def directions(d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random unit-scale core and spurious directions shared by every split."""
    return rng.standard_normal(d) / np.sqrt(d), rng.standard_normal(d) / np.sqrt(d)


def synthetic(n: int, dirs: tuple[np.ndarray, np.ndarray], p_agree: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative (post-ReLU-like) features with a weak core and a strong spurious direction; 4 groups."""
    core, spur = dirs
    d = len(core)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < p_agree, y, 1 - y)
    X = rng.standard_normal((n, d)) + np.outer(2 * y - 1, core) * 1.2 + np.outer(2 * a - 1, spur) * 3
    return np.maximum(X, 0.0), y, 2 * y + a


def dense_reference_step(X: np.ndarray, y: np.ndarray, w: np.ndarray, Xt: np.ndarray, yt: np.ndarray,
                         gt: np.ndarray, l2: float, theta0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One outer step's influence matrix ``(n, groups)`` the straightforward way; returns it and theta."""
    n, d = X.shape
    k = int(y.max()) + 1
    Xa, Xta = np.hstack([X, np.ones((n, 1))]), np.hstack([Xt, np.ones((len(Xt), 1))])
    p = k * (d + 1)
    pen = np.ones((k, d + 1))
    pen[:, -1] = 0.0
    Y = np.eye(k)[y]

    def f(t):
        T = t.reshape(k, d + 1)
        lp = log_softmax(Xa @ T.T, axis=1)
        R = (np.exp(lp) - Y) * w[:, None]
        return -float(np.sum(w * lp[np.arange(n), y])) + 0.5 * l2 * float(np.sum((pen * T) ** 2)), \
            (R.T @ Xa + l2 * pen * T).ravel()

    theta = minimize(f, np.zeros(p) if theta0 is None else theta0, jac=True, method="L-BFGS-B",
                     options={"maxiter": 5000, "gtol": 1e-10, "ftol": 0.0}).x
    P = softmax(Xa @ theta.reshape(k, d + 1).T, axis=1)
    H = np.zeros((k, d + 1, k, d + 1))
    for a in range(k):  # block (a, b) of sum_i w_i (diag p_i - p_i p_i^T) (x) x_i x_i^T, one GEMM each
        for b in range(k):
            c = w * ((a == b) * P[:, a] - P[:, a] * P[:, b])
            H[a, :, b, :] = (Xa * c[:, None]).T @ Xa
    H = H.reshape(p, p) + np.diag((pen * l2).ravel())
    H_inv = np.linalg.pinv(H, hermitian=True)  # the intercepts' common shift makes H singular
    per_sample = np.einsum("nk,nj->nkj", P - Y, Xa).reshape(n, p)
    Pt = softmax(Xta @ theta.reshape(k, d + 1).T, axis=1)
    Rt = Pt - np.eye(k)[yt]
    group_grads = np.stack([np.einsum("nk,nj->kj", Rt[gt == g], Xta[gt == g]).ravel() / np.sum(gt == g)
                            for g in np.unique(gt)])
    return -per_sample @ H_inv @ group_grads.T, theta


def fast_scores(X, y, w, Xt, yt, gt, l2) -> np.ndarray:
    problem = MultinomialProblem(X, y, int(y.max()) + 1, l2)
    phi, factor, P, _ = problem.fit(w, tol=1e-10)
    members = [np.flatnonzero(gt == g) for g in np.unique(gt)]
    return exact_influence(problem, P, factor, set_gradients(problem, phi, Xt, yt, members))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_shape(name: str, dense_steps: int) -> None:
    n, d, n_target, k, steps, n_dense, paper_s = SHAPES[name]
    rng = np.random.default_rng(0)
    dirs = directions(d, rng)
    X, y, _ = synthetic(n, dirs, 0.95, rng)
    Xt, yt, gt = synthetic(n_target, dirs, 0.5, rng)
    Xv, yv, gv = synthetic(n_target // 2 + 1, dirs, 0.5, rng)
    model = GSR(n_steps=steps)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(X, y, X_target=Xt, y_target=yt, groups_target=gt, X_val=Xv, y_val=yv, groups_val=gv)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    hist = model.history_
    per_step_fast = total / (steps + 1)
    print(f"[{name}] held-out {n} x {d}, target {n_target}, {k} classes, 4 groups, {steps} outer steps")
    print(f"  GSR total {total:.2f} s wall, {cpu:.2f} s CPU ({per_step_fast * 1000:.1f} ms/step, {sum(e['n_hessians'] for e in hist)} "
          f"Hessian factorisations), peak memory {peak_rss_gb():.2f} GB; paper (GPU) {paper_s:.0f} s")
    print(f"  worst-group acc step 0 -> best step {model.best_step_}: target {hist[0]['target_worst_group_acc']:.3f} -> "
          f"{hist[model.best_step_]['target_worst_group_acc']:.3f}, validation {hist[0]['val_worst_group_acc']:.3f} -> "
          f"{hist[model.best_step_]['val_worst_group_acc']:.3f}")

    # Dense reference at (possibly) reduced held-out size, on standardised features like GSR's.
    Xd, yd = X[:n_dense], y[:n_dense]
    scaler = Standardizer(Xd, True)
    Xd, Xts = scaler(Xd), scaler(Xt)
    w = np.full(n_dense, 1.0 / n_dense)
    start = time.process_time()
    theta = None
    for _ in range(dense_steps):
        ref, theta = dense_reference_step(Xd, yd, w, Xts, yt, gt, model.l2, theta)
    dense_per_step = (time.process_time() - start) / dense_steps
    start = time.process_time()
    ours = fast_scores(Xd, yd, w, Xts, yt, gt, model.l2)
    ours_per_step = time.process_time() - start
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"  dense reference at held-out {n_dense}: {dense_per_step:.2f} CPU s/step vs ours {ours_per_step:.3f} CPU s/step "
          f"(cold start) -> ratio {dense_per_step / ours_per_step:.0f}x; max relative difference of influences {err:.1e}")
    if n_dense == n:
        print(f"  dense reference extrapolated to {steps} steps: {dense_per_step * (steps + 1):.0f} CPU s "
              f"-> ratio {dense_per_step * (steps + 1) / cpu:.0f}x on the full run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SHAPES))
    parser.add_argument("--dense-steps", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()}), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}")
    for name in SHAPES:
        if args.only in (None, name):
            run_shape(name, args.dense_steps)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
