"""GSR stage-2 runtime at the shapes of the paper's Table 5, on synthetic features.

Prints, per shape, all measured in the same run:

* total wall and CPU seconds for the full GSR run (``grouprobust.lastlayer.GSR``) and its peak memory;
* the fit's matrix work, counted in a second fit (it does not depend on how busy the machine is, so
  two versions of the library compare exactly): float32 Hessian-vector products, float64 passes over
  each feature set, preconditioner builds;
* the ratio of that run to one ``X^T diag(s) X`` product at the same shape (``Ys = X * sqrt(s)``,
  then ``Ys.T @ Ys``: the BLAS floor of one Hessian build);
* the reference algorithm (`tests/gsr_reference.py`: one Hessian factorisation per
  outer step) on the same data: its time, and the max-norm difference of the weight trajectories
  at every outer step (absolute, and in units of the mean weight ``1/n``);
* the influence the fast path computes at the last step against a direct exact solve there.

Threads: the product's policy (`grouprobust.threads.policy_threads` on the CPUs this process may
use and the load at start), decided once at start so that the fit and the product it is compared
with run on the same count, unless ``--threads N`` fixes it.

Optionally (``--dense-steps N``, default 0) the ratio against a straightforward dense implementation measured in the
same run (full-parameter Hessian built from per-sample outer products, ``numpy.linalg.pinv``,
``n x p`` per-sample gradient matrix, inner problem by scipy L-BFGS). The dense reference runs
a few outer steps only (at a reduced held-out size for CivilComments, where it is too slow);
the ratio compares CPU seconds per outer step at the same shape (CPU time, because the
machine may be shared), and the two implementations'
influence scores are checked to agree.

Usage: ``python benchmarks/gsr_scale.py [--only waterbirds|civilcomments] [--threads 1] [--no-reference] [--dense-steps 1]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from threadpoolctl import threadpool_info

from grouprobust.lastlayer import GSR, gsr as gsr_module
from grouprobust.lastlayer._base import Standardizer
from grouprobust.lastlayer._multinomial import MultinomialProblem
from grouprobust.lastlayer.influence import exact_influence, influence_scores, set_gradients
from grouprobust.threads import busy_cpus, fix_native_threads, policy_threads, usable_cpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the frozen reference is a test helper
from gsr_reference import reference_weights  # noqa: E402

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


def rss_gb() -> float:
    """Resident memory of this process now, in GB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def hessian_product_seconds(X: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """Best (wall, CPU) seconds of one ``X^T diag(s) X`` product built as GSR's Hessian is (scale rows, SYRK)."""
    s = np.random.default_rng(1).uniform(0.05, 0.25, len(X))
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        Ys = X * np.sqrt(s)[:, None]
        Ys.T @ Ys
        best_wall, best_cpu = min(best_wall, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
        del Ys
    return best_wall, best_cpu


@contextlib.contextmanager
def counted_work(counts: dict):
    """Count the fit's matrix work, which does not depend on the machine's speed: float32 Hessian-vector
    products, float64 passes over each feature set (by its row count) and preconditioner builds."""
    wrapped = {"_single_hess_vec": "float32 products", "times": "passes", "t_times": "passes",
               "preconditioner": "builds"}
    originals = {name: getattr(MultinomialProblem, name) for name in wrapped}

    def counter(name, original):
        def method(self, *args, **kwargs):
            key = wrapped[name]
            if key == "passes" and args[0].dtype == np.float64:
                key = f"float64 passes over {len(args[0])} rows"
            counts[key] = counts.get(key, 0) + 1
            return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(MultinomialProblem, name, counter(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(MultinomialProblem, name, original)


@contextlib.contextmanager
def traced_weights(trajectory: list):
    """Record the weights every outer step's head is retrained on (the fast path's trajectory)."""
    originals = {cls: cls.fit for cls in (gsr_module._PrimalHead, gsr_module._DualHead)}

    def tracer(original):
        def fit(self, w):
            trajectory.append(w.copy())
            traced_weights.last_head = self
            return original(self, w)
        return fit

    for cls, original in originals.items():
        cls.fit = tracer(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.fit = original


def influence_check(head, target, w_prev: np.ndarray, w: np.ndarray, tol: float) -> float:
    """Max relative difference between the fast path's influence at ``w`` (warm from ``w_prev``) and a direct exact solve."""
    if hasattr(head, "cross"):  # the dual head needs the new split's cross-Gram matrix
        p = head.dual.problem
        head.cross[id(target)] = p.times(target.X, p.standardized(p.X).T)
    head.fit(w_prev)
    head.fit(w)
    c = np.full(len(target.y), 1.0 / len(target.y))
    P_tar, _, _ = target.evaluate(head.logits(target))
    fast, _ = head.influence(target, P_tar, c, True)
    problem = head.problem if hasattr(head, "problem") else head.dual.problem
    phi = head.phi_of(head.state())
    P = head.P
    G = problem.reduced_grad(np.where(np.eye(problem.k, dtype=bool)[target.y], P_tar - 1.0, P_tar), target.X, c)[None]
    exact = influence_scores(problem, P, problem.factorize(phi, w, P, "parameter").solve(G))[:, 0]
    return float(np.abs(fast - exact).max() / np.abs(exact).max())


def run_shape(name: str, dense_steps: int, reference: bool) -> None:
    n, d, n_target, k, steps, n_dense, paper_s = SHAPES[name]
    rng = np.random.default_rng(0)
    dirs = directions(d, rng)
    X, y, _ = synthetic(n, dirs, 0.95, rng)
    Xt, yt, gt = synthetic(n_target, dirs, 0.5, rng)
    Xv, yv, gv = synthetic(n_target // 2 + 1, dirs, 0.5, rng)
    print(f"[{name}] held-out {n} x {d}, target {n_target}, {k} classes, 4 groups, {steps} outer steps")
    before_fit = rss_gb()
    model = GSR(n_steps=steps)
    trajectory: list[np.ndarray] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    with traced_weights(trajectory):
        model.fit(X, y, X_target=Xt, y_target=yt, groups_target=gt, X_val=Xv, y_val=yv, groups_val=gv)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_rss_gb()
    prod_wall, prod_cpu = hessian_product_seconds(X)  # after the fit, so its temporary is not in the fit's peak
    head = traced_weights.last_head
    work: dict = {}
    if isinstance(head, gsr_module._PrimalHead):  # the dual head's work is its kernel factorisations (below)
        with counted_work(work):  # a second, counted fit, after the peak was read: the timed one runs unwrapped
            GSR(n_steps=steps).fit(X, y, X_target=Xt, y_target=yt, groups_target=gt, X_val=Xv, y_val=yv, groups_val=gv)
    hist = model.history_
    print(f"  GSR total {total:.2f} s wall, {cpu:.2f} s CPU ({total / (steps + 1) * 1000:.1f} ms/step wall, "
          f"{sum(e['n_hessians'] for e in hist)} Hessian factorisations, {type(head).__name__}), peak memory {peak:.2f} GB "
          f"(process; {before_fit:.2f} GB before the fit: imports and the data sets); "
          f"paper (GPU) {paper_s:.0f} s")
    if work:
        print("  work (machine-independent): " + ", ".join(f"{count} {key}" for key, count in sorted(work.items())))
    print(f"  one X^T diag(s) X product: {prod_wall:.3f} s wall, {prod_cpu:.3f} s CPU -> fit / product = "
          f"{total / prod_wall:.1f} (wall), {cpu / prod_cpu:.1f} (CPU)")
    print(f"  worst-group acc step 0 -> best step {model.best_step_}: target {hist[0]['target_worst_group_acc']:.3f} -> "
          f"{hist[model.best_step_]['target_worst_group_acc']:.3f}, validation {hist[0]['val_worst_group_acc']:.3f} -> "
          f"{hist[model.best_step_]['val_worst_group_acc']:.3f}")
    target = gsr_module._Split(Xt, yt, gt)  # raw: the problem standardises on the fly
    print(f"  influence at the last step vs a direct exact solve: max relative difference "
          f"{influence_check(head, target, trajectory[-2], trajectory[-1], model.tol):.1e}")
    if reference:
        start, cpu_start = time.perf_counter(), time.process_time()
        ref, ref_h = reference_weights(X, y, Xt, yt, gt, n_steps=steps)
        ref_total, ref_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        diff = np.array([np.abs(a - b).max() for a, b in zip(trajectory, ref)])
        print(f"  reference algorithm (tests/gsr_reference.py): {ref_total:.2f} s wall, {ref_cpu:.2f} s CPU, {ref_h} Hessian "
              f"factorisations -> speed-up {ref_total / total:.1f}x wall, {ref_cpu / cpu:.1f}x CPU; fit / product "
              f"{ref_total / prod_wall:.1f} (wall)")
        print(f"  weight trajectories, {len(diff)} steps: max over steps of max|w - w_ref| = {diff.max():.1e} "
              f"({diff.max() * n:.1e} mean weights; worst step {int(diff.argmax())})")

    if dense_steps <= 0:
        return
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
    parser.add_argument("--dense-steps", type=int, default=0, help="outer steps of the dense reference (0: skip it)")
    parser.add_argument("--threads", type=int, help="BLAS threads (default: numpy's own choice)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference algorithm (tests/gsr_reference.py)")
    args = parser.parse_args(argv)
    # one count for the whole run (the estimators' own policy then stands aside), as the CLI does
    count = args.threads or policy_threads(usable_cpus(), busy_cpus())
    fix_native_threads(count)  # numpy's pools only: torch is not imported, so the peak memory is the fit's
    print(f"threads: {count} ({'--threads' if args.threads else 'the policy, at start'})")
    with contextlib.nullcontext():
        pools = ", ".join(f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info())
        print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()}), {pools}, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS')}")
        for name in SHAPES:
            if args.only in (None, name):
                run_shape(name, args.dense_steps, not args.no_reference)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
