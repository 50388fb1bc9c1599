"""GSR stage 2 with one Hessian factorisation per outer step, kept verbatim as the reference the fast one is checked against.

Not part of the library: `tests/test_lastlayer_gsr_fast.py` and `benchmarks/gsr_scale.py` run it in the
same process as `grouprobust.lastlayer.GSR` and compare the weight trajectories step by step.
The multinomial problem below is the library's `_multinomial.py` as of commit 40401fd (one Hessian
factorisation per outer step, chord Newton steps); `reference_weights` is that commit's `GSR.fit` loop
without selection and logging.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg
from scipy.special import log_softmax, softmax

from grouprobust.errors import GroupRobustError

FORMS = ("auto", "kernel", "parameter")


def sum_zero_basis(k: int) -> np.ndarray:
    """A ``k x (k-1)`` matrix with orthonormal columns, each orthogonal to the all-ones vector."""
    # Helmert basis: column j contrasts class j+1 with classes 0..j.
    q = np.zeros((k, k - 1))
    for j in range(1, k):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return q


@dataclass
class Factor:
    """A factorised Hessian ``H(Phi, w)``: ``solve(G)`` returns ``H^{-1} G`` for ``G`` of shape ``(m, k-1, D)``."""

    solve: Callable[[np.ndarray], np.ndarray]
    form: str


class ReferenceProblem:
    """Fixed data ``(X, y)`` of one weighted multinomial problem; every array is float64.

    ``X`` is ``(n, d)``, ``y`` integer classes in ``0..k-1``. Weights are passed per call, so the
    same problem serves every outer step of GSR.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int, l2: float, fit_intercept: bool = True):
        if l2 <= 0:
            raise GroupRobustError(f"l2 must be > 0 (the inner problem must be strictly convex), got {l2}; pass l2=1e-3 or so")
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.intp)
        self.n, self.d = self.X.shape
        self.k = int(n_classes)
        self.l2 = float(l2)
        self.fit_intercept = bool(fit_intercept)
        self.D = self.d + int(self.fit_intercept)
        self.Q = sum_zero_basis(self.k)
        self.Y = np.zeros((self.n, self.k))
        self.Y[np.arange(self.n), self.y] = 1.0
        self._gram: np.ndarray | None = None
        self._X_aug: np.ndarray | None = None

    # -- coordinates ----------------------------------------------------------------------------
    def zeros(self) -> np.ndarray:
        """The starting point ``Phi = 0`` (uniform predictions), shape ``(k-1, D)``."""
        return np.zeros((self.k - 1, self.D))

    def to_full(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(coef (k, d), intercept (k,))`` of the full multinomial model with sum-zero logits."""
        coef = self.Q @ phi[:, :self.d]
        intercept = self.Q @ phi[:, self.d] if self.fit_intercept else np.zeros(self.k)
        return coef, intercept

    def logits(self, phi: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """Logits ``(n, k)`` of ``X`` (default: the problem's own samples)."""
        X = self.X if X is None else X
        z = X @ phi[:, :self.d].T
        if self.fit_intercept:
            z = z + phi[:, self.d]
        return z @ self.Q.T

    def reduced_grad(self, R: np.ndarray, X: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``sum_i scale_i (Q^T r_i) x~_i^T`` as a ``(k-1, D)`` array, for residuals ``R = P - Y`` ``(n, k)``."""
        S = (R * scale[:, None]) @ self.Q
        g = np.empty((self.k - 1, self.D))
        g[:, :self.d] = S.T @ X
        if self.fit_intercept:
            g[:, self.d] = S.sum(axis=0)
        return g

    # -- objective --------------------------------------------------------------------------------
    def value_grad(self, phi: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(F(Phi), grad F (k-1, D), probabilities P (n, k))`` at weights ``w``."""
        z = self.logits(phi)
        logp = log_softmax(z, axis=1)
        P = np.exp(logp)
        value = -float(w @ logp[np.arange(self.n), self.y]) + 0.5 * self.l2 * float(np.sum(phi[:, :self.d] ** 2))
        grad = self.reduced_grad(P - self.Y, self.X, w)
        grad[:, :self.d] += self.l2 * phi[:, :self.d]
        return value, grad, P

    def curvature_roots(self, P: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``C_i = sqrt(w_i) (Q^T (diag p_i - p_i p_i^T) Q)^{1/2}``, shape ``(n, k-1, k-1)``: ``H = sum_i C_i^T C_i (x) x~ x~^T + penalty``."""
        if self.k == 2:
            # Q^T A Q = 2 p0 p1 for the single contrast (1, -1)/sqrt(2).
            return np.sqrt(np.maximum(w, 0.0) * 2.0 * P[:, 0] * P[:, 1])[:, None, None]
        B = np.einsum("ka,nk,kb->nab", self.Q, P, self.Q) - np.einsum("nk,ka,nj,jb->nab", P, self.Q, P, self.Q)
        vals, vecs = np.linalg.eigh(B)
        root = np.einsum("nab,nb,ncb->nac", vecs, np.sqrt(np.clip(vals, 0.0, None)), vecs)
        return root * np.sqrt(np.maximum(w, 0.0))[:, None, None]

    # -- Hessian solves -----------------------------------------------------------------------
    def choose_form(self, form: str) -> str:
        """``"kernel"`` when there are fewer samples than features per class, else ``"parameter"``."""
        if form not in FORMS:
            raise GroupRobustError(f"unknown Hessian form {form!r}; use one of: {', '.join(FORMS)}")
        if form == "auto":
            return "kernel" if self.n < self.D else "parameter"
        return form

    def factorize(self, phi: np.ndarray, w: np.ndarray, P: np.ndarray | None = None, form: str = "auto") -> Factor:
        """Factor the Hessian of ``F`` at ``(Phi, w)`` in the given form."""
        if P is None:
            P = softmax(self.logits(phi), axis=1)
        C = self.curvature_roots(P, w)
        form = self.choose_form(form)
        try:
            return self._kernel_factor(C) if form == "kernel" else self._parameter_factor(C)
        except linalg.LinAlgError:
            raise GroupRobustError("the weighted last-layer Hessian is singular (the weighted samples leave the intercept "
                                   "undetermined, e.g. all weight on one class); keep positive weight on every class "
                                   "or pass fit_intercept=False") from None

    def _parameter_factor(self, C: np.ndarray) -> Factor:
        km, D, d = self.k - 1, self.D, self.d
        Xt = self.augmented()
        CtC = np.einsum("nab,nac->nbc", C, C)  # w_i B_i
        H = np.empty((km, D, km, D))
        for a in range(km):
            for b in range(a, km):
                c = CtC[:, a, b]
                if a == b:
                    Ys = Xt * np.sqrt(np.maximum(c, 0.0))[:, None]
                    block = Ys.T @ Ys  # numpy computes A.T @ A with a symmetric rank-k update
                else:
                    block = (Xt * c[:, None]).T @ Xt
                H[a, :, b, :] = block
                if a != b:
                    H[b, :, a, :] = block.T
        H = H.reshape(km * D, km * D)
        diag = np.arange(km * D).reshape(km, D)[:, :d].ravel()
        H[diag, diag] += self.l2
        cho = linalg.cho_factor(H, lower=True, overwrite_a=True, check_finite=False)

        def solve(G: np.ndarray) -> np.ndarray:
            m = G.shape[0]
            out = linalg.cho_solve(cho, G.reshape(m, km * D).T, check_finite=False)
            return out.T.reshape(m, km, D)

        return Factor(solve, "parameter")

    def augmented(self) -> np.ndarray:
        """``X`` with a column of ones appended when fitting an intercept (cached)."""
        if not self.fit_intercept:
            return self.X
        if self._X_aug is None:
            self._X_aug = np.hstack([self.X, np.ones((self.n, 1))])
        return self._X_aug

    def gram(self) -> np.ndarray:
        """The feature Gram matrix ``X X^T`` (computed once, reused by every kernel-form solve)."""
        if self._gram is None:
            self._gram = self.X @ self.X.T
        return self._gram

    def _kernel_factor(self, C: np.ndarray) -> Factor:
        n, km, d, l2 = self.n, self.k - 1, self.d, self.l2
        N = n * km
        # K[(i,a),(j,b)] = (C_i C_j^T)[a,b] * x_i . x_j
        if km == 1:
            c = C[:, 0, 0]
            K = self.gram() * np.outer(c, c)
        else:
            K = (np.einsum("iac,jbc->iajb", C, C) * self.gram()[:, None, :, None]).reshape(N, N)
        K[np.diag_indices(N)] += l2
        cho = linalg.cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
        Dm = C.reshape(N, km)  # intercept columns of Z: D[(i,a), c] = C_i[a, c]
        X = self.X

        def z_u(V: np.ndarray) -> np.ndarray:
            """``Z_u v`` for ``V`` of shape (m, k-1, d): result (N, m)."""
            m = V.shape[0]
            XV = (X @ V.reshape(m * km, d).T).reshape(n, m, km)  # x_i . v_b
            return np.matmul(C, XV.transpose(0, 2, 1)).reshape(N, m)

        def z_u_t(T: np.ndarray) -> np.ndarray:
            """``Z_u^T t`` for ``T`` of shape (N, m): result (m, k-1, d)."""
            m = T.shape[1]
            S = np.matmul(C.transpose(0, 2, 1), T.reshape(n, km, m))  # (n, k-1, m)
            return (S.reshape(n, km * m).T @ X).reshape(km, m, d).transpose(1, 0, 2)

        if self.fit_intercept:
            KiD = linalg.cho_solve(cho, Dm, check_finite=False)
            schur = linalg.cho_factor(l2 * (Dm.T @ KiD), lower=True, check_finite=False)

        def solve(G: np.ndarray) -> np.ndarray:
            gu = G[:, :, :d]
            out = np.empty_like(G)
            h = gu
            if self.fit_intercept:
                t = linalg.cho_solve(cho, z_u(gu), check_finite=False)  # (K + l2)^{-1} Z_u g_u
                vc = linalg.cho_solve(schur, G[:, :, d].T - Dm.T @ t, check_finite=False)  # (k-1, m)
                out[:, :, d] = vc.T
                h = gu - z_u_t(Dm @ vc)
            s = linalg.cho_solve(cho, z_u(h), check_finite=False)
            out[:, :, :d] = (h - z_u_t(s)) / l2
            return out

        return Factor(solve, "kernel")

    # -- the inner solve ------------------------------------------------------------------------
    def fit(self, w: np.ndarray, phi0: np.ndarray | None = None, factor: Factor | None = None, tol: float = 1e-9,
            max_iter: int = 200, form: str = "auto") -> tuple[np.ndarray, Factor, np.ndarray, int]:
        """Minimise ``F`` at weights ``w`` by (chord-)Newton with backtracking, warm-started at ``phi0``.

        ``factor`` (e.g. the previous outer step's Hessian) is reused as long as it makes fast
        progress; convergence is always confirmed with a Hessian factored at the returned point.
        Stops when the Newton decrement ``sqrt(g^T H^{-1} g / sum(w))`` is below ``tol``.
        Returns ``(Phi, factor at Phi, probabilities (n, k), number of Hessian factorisations)``.
        """
        phi = self.zeros() if phi0 is None else phi0.copy()
        value, grad, P = self.value_grad(phi, w)
        scale = max(float(np.sum(w)), 1e-300)
        fresh = factor is None
        if fresh:
            factor = self.factorize(phi, w, P, form)
        n_factor, last_dec = int(fresh), np.inf
        for _ in range(max_iter):
            step = factor.solve(grad[None])[0]
            dec2 = float(np.sum(grad * step))
            if dec2 <= tol * tol * scale:
                if fresh:
                    return phi, factor, P, n_factor
                factor, fresh, last_dec = self.factorize(phi, w, P, form), True, np.inf
                n_factor += 1
                continue
            if not fresh and dec2 > 0.25 * last_dec:
                # The stale Hessian no longer gives fast progress: refactor here.
                factor, fresh, last_dec = self.factorize(phi, w, P, form), True, np.inf
                n_factor += 1
                continue
            alpha = 1.0
            while True:
                cand = phi - alpha * step
                new_value, new_grad, new_P = self.value_grad(cand, w)
                # The slack absorbs rounding in F once the decrease is below machine precision.
                if new_value <= value - 1e-4 * alpha * dec2 + 1e-13 * abs(value) or alpha < 1e-8:
                    break
                alpha *= 0.5
            if alpha < 1e-8:
                if fresh:  # no descent along an exact Newton step: converged to machine precision
                    return phi, factor, P, n_factor
                factor, fresh, last_dec = self.factorize(phi, w, P, form), True, np.inf
                n_factor += 1
                continue
            phi, value, grad, P = cand, new_value, new_grad, new_P
            fresh, last_dec = False, dec2
        raise GroupRobustError(f"the last-layer Newton solve did not converge in {max_iter} iterations; "
                               "increase l2 or standardise the features")


def _set_gradients(problem, phi, X, y, members, P):
    R = P.copy()
    R[np.arange(len(y)), y] -= 1.0
    out = np.empty((len(members), problem.k - 1, problem.D))
    for g, idx in enumerate(members):
        out[g] = problem.reduced_grad(R[idx], X[idx], np.full(len(idx), 1.0 / len(idx)))
    return out


def _influence_scores(problem, P, V):
    m = V.shape[0]
    S = (P - problem.Y) @ problem.Q
    XV = problem.X @ V[:, :, :problem.d].reshape(m * (problem.k - 1), problem.d).T
    XV = XV.reshape(problem.n, m, problem.k - 1)
    if problem.fit_intercept:
        XV = XV + V[:, :, problem.d][None]
    return -np.einsum("nb,nmb->nm", S, XV)


def reference_weights(X, y, X_target, y_target, groups_target, *, l2=0.1, hessian="exact", n_steps=100, step_size=1.0,
                      tau=1.0, clip=1.0, step_decay=0.1, decay_every=30, fit_intercept=True, standardize=True,
                      tol=1e-9, form="auto") -> tuple[list[np.ndarray], int]:
    """The weights before every outer step ``0..n_steps`` (step 0: uniform) and the Hessians factorised.

    Labels are class indices ``0..k-1``; this is ``GSR.fit``'s loop as of commit 40401fd.
    """
    from grouprobust.lastlayer._base import Standardizer

    scaler = Standardizer(X, bool(standardize))
    problem = ReferenceProblem(scaler(X), y, int(max(y.max(), y_target.max())) + 1, l2, fit_intercept)
    Xt = scaler(X_target)
    ids = np.unique(groups_target)
    members = [np.flatnonzero(groups_target == g) for g in ids]
    n = len(y)
    w = np.full(n, 1.0 / n)
    log_gamma = np.zeros(len(ids))
    phi, factor, trajectory, n_total = None, None, [], 0
    for t in range(n_steps + 1):
        trajectory.append(w.copy())
        phi, factor, P, n_h = problem.fit(w, phi, factor, tol=tol, form=form)
        n_total += n_h
        if t == n_steps:
            break
        logp = log_softmax(problem.logits(phi, Xt), axis=1)
        ce = -logp[np.arange(len(y_target)), y_target]
        tar_loss = np.array([ce[idx].mean() for idx in members])
        log_gamma += tar_loss / tau
        gamma = softmax(log_gamma)
        G = _set_gradients(problem, phi, Xt, y_target, members, np.exp(logp))
        scores = _influence_scores(problem, P, factor.solve(G)) if hessian == "exact" else _influence_scores(problem, P, G)
        xi = scores @ gamma
        rms = float(np.sqrt(np.mean(xi ** 2)))
        if clip is not None and rms > clip:
            xi *= clip / rms
        lr = step_size * step_decay ** (t // decay_every)
        w_new = np.maximum(w - (lr / n) * xi, 0.0)
        w = w_new / w_new.sum()
    return trajectory, n_total
