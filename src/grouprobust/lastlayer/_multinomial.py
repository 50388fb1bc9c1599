"""Weighted L2-regularised multinomial logistic regression: objective, Newton solver, Hessian solves.

The model has ``k`` logits ``W x + b`` (``W`` is ``k x d``, ``b`` has ``k`` entries). Softmax ignores a
common shift of the logits, so only the part of ``(W, b)`` orthogonal to the all-ones class vector
matters; the penalty ``(l2/2) ||W||^2`` forces ``W`` into that part and the unpenalised intercept's
shift direction is a flat direction of the objective. We therefore work in *reduced* coordinates:
with ``Q`` a ``k x (k-1)`` orthonormal basis of the classes' sum-zero subspace,
``W = Q Phi_u`` and ``b = Q Phi_c``, and ``Phi = [Phi_u | Phi_c]`` is ``(k-1) x D``
(``D = d + 1`` with an intercept, else ``d``). In these coordinates the objective

    F(Phi) = sum_i w_i CE(Q Phi x~_i, y_i) + (l2 / 2) ||Phi_u||^2

is strictly convex and its Hessian ``H`` is exactly the full-parameter Hessian restricted to the
directions that change predictions, so ``H^{-1}`` applied to any per-sample or per-set gradient
(these are always orthogonal to the flat direction) is the pseudo-inverse of the full Hessian.

Hessian solves come in two forms with identical results:

* ``"parameter"``: build ``H`` (``(k-1) D`` square) and Cholesky-factor it; cost ~ ``n D^2 k^2 / 2``.
* ``"kernel"``: Woodbury on the ``n (k-1)``-square kernel ``K = Z_u Z_u^T`` (built from the
  feature Gram matrix ``X X^T``, computed once per data set), with the unpenalised intercept
  eliminated by a ``(k-1)``-square Schur complement; cost ~ ``n^2 k^2 + (n k)^3 / 3``.

Across GSR's outer steps the weights move little, so the parameter form does not rebuild ``H``
at every step: a Cholesky factor of an earlier step's Hessian preconditions conjugate gradients
on Hessian-vector products at the current point (``4 n D k`` flops each instead of ``n D^2 k^2``
for a rebuild), and the factor is rebuilt only when a solve stops converging fast. The kernel
form's GSR path (`DualKernelProblem`) works in dual coordinates on Gram matrices computed once,
so no step touches the ``d``-dimensional features at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg
from scipy.special import log_softmax, softmax

from grouprobust.errors import GroupRobustError

FORMS = ("auto", "kernel", "parameter")
SINGULAR = ("the weighted last-layer Hessian is singular (the weighted samples leave the intercept undetermined, "
            "e.g. all weight on one class); keep positive weight on every class or pass fit_intercept=False")


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
    """A factorised Hessian ``H(Phi, w)``: ``solve(G)`` returns ``H^{-1} G`` for ``G`` of shape ``(m, k-1, D)``.

    ``chol`` is the parameter form's Cholesky factor (of this Hessian when ``exact``, else of an
    earlier one that preconditions conjugate gradients); ``builds`` counts the Hessians it built.
    """

    solve: Callable[..., np.ndarray]
    form: str
    chol: tuple | None = None
    exact: bool = True
    builds: int = 0


def pcg(apply_h: Callable[[np.ndarray], np.ndarray], precond: Callable[[np.ndarray], np.ndarray], G: np.ndarray,
        rtol: float, max_iter: int) -> tuple[np.ndarray, int, bool]:
    """Preconditioned conjugate gradients for ``H x = g``, one independent run per row of ``G`` ``(m, p)``.

    Stops a row when its residual in the preconditioner's norm, ``sqrt(r^T M^{-1} r)``, is below
    ``rtol`` times that of ``g``. Returns ``(x (m, p), iterations, every row converged)``.
    """
    x = np.zeros_like(G)
    r = G.copy()
    z = precond(r)
    rz = np.einsum("mp,mp->m", r, z)
    goal = (rtol * rtol) * rz
    active = rz > goal
    p = z.copy()
    it = 0
    while np.any(active) and it < max_iter:
        it += 1
        Hp = apply_h(p)
        pHp = np.einsum("mp,mp->m", p, Hp)
        alpha = np.where(active, rz / np.where(pHp > 0, pHp, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * Hp
        z = precond(r)
        rz_new = np.einsum("mp,mp->m", r, z)
        active &= (rz_new > goal) & (pHp > 0)
        beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta[:, None] * p
        rz = rz_new
    return x, it, not np.any(active)


class MultinomialProblem:
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
        self._X32: np.ndarray | None = None

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
        form = self.choose_form(form)
        if form == "parameter":
            B = self.curvature(P, w)
            return self.iterative_factor(B, self.cholesky(B), True)
        C = self.curvature_roots(P, w)
        try:
            return self._kernel_factor(C) if form == "kernel" else self._parameter_factor(C)
        except linalg.LinAlgError:
            raise GroupRobustError(SINGULAR) from None

    def curvature(self, P: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Per-sample curvature ``B_i = w_i Q^T (diag p_i - p_i p_i^T) Q``: ``(n,)`` for two classes, else ``(n, k-1, k-1)``."""
        if self.k == 2:
            return np.maximum(w, 0.0) * 2.0 * P[:, 0] * P[:, 1]
        QP = P @ self.Q
        B = np.einsum("ka,nk,kb->nab", self.Q, P, self.Q) - QP[:, :, None] * QP[:, None, :]
        return B * np.maximum(w, 0.0)[:, None, None]

    def hess_vec(self, B: np.ndarray, V: np.ndarray, single: bool = False) -> np.ndarray:
        """``H V`` for ``V`` ``(m, k-1, D)`` at the curvature ``B`` (`curvature`): two passes over ``X``.

        ``single=True`` makes the passes over a float32 copy of ``X`` (half the memory traffic,
        relative error about 1e-7): good enough for a Newton direction, never used for influences.
        """
        m, km, d = V.shape[0], self.k - 1, self.d
        if single:
            if self._X32 is None:
                self._X32 = self.X.astype(np.float32)
            X32 = self._X32
            U = (X32 @ V[:, :, :d].reshape(m * km, d).T.astype(np.float32)).reshape(self.n, m, km).astype(np.float64)
            if self.fit_intercept:
                U += V[:, :, d][None]
            T = U * B[:, None, None] if B.ndim == 1 else np.einsum("nab,nmb->nma", B, U)
            out = np.empty_like(V)
            out[:, :, :d] = (T.reshape(self.n, m * km).T.astype(np.float32) @ X32).reshape(m, km, d) + self.l2 * V[:, :, :d]
            if self.fit_intercept:
                out[:, :, d] = T.sum(axis=0)
            return out
        U = (self.X @ V[:, :, :d].reshape(m * km, d).T).reshape(self.n, m, km)
        if self.fit_intercept:
            U += V[:, :, d][None]
        T = U * B[:, None, None] if B.ndim == 1 else np.einsum("nab,nmb->nma", B, U)
        out = np.empty_like(V)
        out[:, :, :d] = (T.reshape(self.n, m * km).T @ self.X).reshape(m, km, d) + self.l2 * V[:, :, :d]
        if self.fit_intercept:
            out[:, :, d] = T.sum(axis=0)
        return out

    def hessian_matrix(self, B: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """The ``(k-1) D``-square Hessian at curvature ``B``, built in row chunks (no copy of ``X``)."""
        km, D, d = self.k - 1, self.D, self.d
        Bm = B[:, None, None] if B.ndim == 1 else B
        H = np.zeros((km, D, km, D))
        for lo in range(0, self.n, chunk):
            Xc, Bc = self.X[lo:lo + chunk], Bm[lo:lo + chunk]
            for a in range(km):
                for b in range(a, km):
                    c = Bc[:, a, b]
                    if a == b:
                        Ys = Xc * np.sqrt(np.maximum(c, 0.0))[:, None]
                        H[a, :d, a, :d] += Ys.T @ Ys  # numpy computes A.T @ A with a symmetric rank-k update
                    else:
                        H[a, :d, b, :d] += (Xc * c[:, None]).T @ Xc
                    if self.fit_intercept:
                        col = c @ Xc
                        H[a, :d, b, d] += col
                        H[a, d, b, :d] += col
                        H[a, d, b, d] += c.sum()
        for a in range(km):
            for b in range(a + 1, km):
                H[b, :, a, :] = H[a, :, b, :].T
        H = H.reshape(km * D, km * D)
        diag = np.arange(km * D).reshape(km, D)[:, :d].ravel()
        H[diag, diag] += self.l2
        return H

    def cholesky(self, B: np.ndarray) -> tuple:
        """Cholesky factor (scipy ``cho_factor``) of the Hessian at curvature ``B``."""
        try:
            return linalg.cho_factor(self.hessian_matrix(B), lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            raise GroupRobustError(SINGULAR) from None

    def cho_apply(self, chol: tuple, G: np.ndarray) -> np.ndarray:
        """``M^{-1} G`` for the Cholesky factor ``chol`` and ``G`` ``(m, k-1, D)``."""
        m = G.shape[0]
        out = linalg.cho_solve(chol, G.reshape(m, -1).T, check_finite=False)
        return out.T.reshape(G.shape)

    def iterative_factor(self, B: np.ndarray, chol: tuple, exact: bool, max_cg: int = 10) -> Factor:
        """A `Factor` of the Hessian at curvature ``B``: direct when ``chol`` factors it (``exact``), else
        conjugate gradients preconditioned by ``chol``; ``solve(G, rtol)`` (default ``1e-12``) falls back to
        building the exact factor if the preconditioner has gone stale (``builds`` counts that)."""
        factor = Factor(lambda G, rtol=1e-12: None, "parameter", chol, exact, 0)
        shape = (self.k - 1, self.D)

        def solve(G: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
            if factor.exact:
                return self.cho_apply(factor.chol, G)
            m = G.shape[0]
            x, _, ok = pcg(lambda V: self.hess_vec(B, V.reshape(m, *shape)).reshape(m, -1),
                           lambda R: self.cho_apply(factor.chol, R.reshape(m, *shape)).reshape(m, -1),
                           G.reshape(m, -1), rtol, max_cg)
            if ok:
                return x.reshape(G.shape)
            factor.chol, factor.exact = self.cholesky(B), True
            factor.builds += 1
            return self.cho_apply(factor.chol, G)

        factor.solve = solve
        return factor

    def _parameter_factor(self, C: np.ndarray) -> Factor:
        B = np.einsum("nab,nac->nbc", C, C)
        B = B[:, 0, 0] if self.k == 2 else B
        chol = self.cholesky(B)
        return self.iterative_factor(B, chol, True)

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

        def solve(G: np.ndarray, rtol: float | None = None) -> np.ndarray:
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
            max_iter: int = 200, form: str = "auto", polish: bool = False) -> tuple[np.ndarray, Factor, np.ndarray, int]:
        """Minimise ``F`` at weights ``w`` by Newton's method with backtracking, warm-started at ``phi0``.

        ``factor`` (e.g. the previous outer step's) is reused: in the kernel form as a chord Hessian
        while it makes fast progress, in the parameter form as the preconditioner of conjugate-gradient
        Newton steps until they stop converging fast. Stops when the Newton decrement
        ``sqrt(g^T H^{-1} g / sum(w))`` is below ``tol``. Returns ``(Phi, factor at Phi, probabilities
        (n, k), number of Hessians built)``; the factor's ``solve`` is exact (direct, or conjugate
        gradients to ``rtol``). ``polish=True`` then takes one more exact Newton step and factors the
        Hessian there, so the result is at machine precision whichever path reached ``tol`` (one-shot use).
        """
        if self.choose_form(form) == "parameter":
            phi, factor, P, builds = self._fit_preconditioned(w, phi0, factor, tol, max_iter)
        else:
            phi, factor, P, builds = self._fit_chord(w, phi0, factor, tol, max_iter, form)
        if polish:
            phi = phi - factor.solve(self.value_grad(phi, w)[1][None])[0]
            P = softmax(self.logits(phi), axis=1)
            factor, builds = self.factorize(phi, w, P, form), builds + 1
        return phi, factor, P, builds

    def _line_search(self, phi, value, step, dec2, w):
        """Backtracking along ``-step``: ``(alpha, candidate, its value, gradient, probabilities)``; alpha < 1e-8 means none."""
        alpha = 1.0
        while True:
            cand = phi - alpha * step
            new_value, new_grad, new_P = self.value_grad(cand, w)
            # The slack absorbs rounding in F once the decrease is below machine precision.
            if new_value <= value - 1e-4 * alpha * dec2 + 1e-13 * abs(value) or alpha < 1e-8:
                return alpha, cand, new_value, new_grad, new_P
            alpha *= 0.5

    def _fit_preconditioned(self, w, phi0, factor, tol, max_iter, max_cg: int = 6):
        # Inexact Newton: each step's conjugate gradients stop at a relative residual
        # eta = min(0.1, previous Newton decrement), which keeps Newton's fast local convergence
        # (Eisenstat-Walker forcing terms) while far-from-converged steps take one or two iterations.
        phi = self.zeros() if phi0 is None else phi0.copy()
        value, grad, P = self.value_grad(phi, w)
        scale = max(float(np.sum(w)), 1e-300)
        chol = factor.chol if factor is not None and factor.form == "parameter" else None
        builds, shape, eta = 0, (1, self.k - 1, self.D), 0.1
        for _ in range(max_iter):
            B = self.curvature(P, w)
            exact = chol is None
            if not exact:
                x, _, ok = pcg(lambda V: self.hess_vec(B, V.reshape(shape), single=True).reshape(1, -1),
                               lambda R: self.cho_apply(chol, R.reshape(shape)).reshape(1, -1),
                               grad.reshape(1, -1), max(eta, 1e-5), max_cg)
                step, exact = x.reshape(grad.shape), not ok
            if exact:  # no factor yet, or the preconditioner has gone stale: build it here
                chol, builds = self.cholesky(B), builds + 1
                step = self.cho_apply(chol, grad[None])[0]
            dec2 = float(np.sum(grad * step))
            if dec2 <= tol * tol * scale:
                return phi, self.iterative_factor(B, chol, exact), P, builds
            eta = min(0.1, float(np.sqrt(max(dec2, 0.0) / scale)))
            alpha, cand, new_value, new_grad, new_P = self._line_search(phi, value, step, dec2, w)
            if alpha < 1e-8:
                if exact:  # no descent along an exact Newton step: converged to machine precision
                    return phi, self.iterative_factor(B, chol, True), P, builds
                chol = None
                continue
            phi, value, grad, P = cand, new_value, new_grad, new_P
        raise GroupRobustError(f"the last-layer Newton solve did not converge in {max_iter} iterations; "
                               "increase l2 or standardise the features")

    def _fit_chord(self, w, phi0, factor, tol, max_iter, form):
        phi = self.zeros() if phi0 is None else phi0.copy()
        value, grad, P = self.value_grad(phi, w)
        scale = max(float(np.sum(w)), 1e-300)
        fresh = factor is None or factor.form != "kernel"
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
            alpha, cand, new_value, new_grad, new_P = self._line_search(phi, value, step, dec2, w)
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


class DualKernelProblem:
    """The inner problem of a `MultinomialProblem` with ``n < D`` in dual coordinates (GSR's kernel form).

    With the L2 penalty the optimal ``Phi_u`` lies in the span of the samples, ``Phi_u = A^T X``
    (``A`` is ``(n, k-1)``), so the reduced logits of any set ``X_o`` are ``(X_o X^T) A + b``. Once the
    Gram matrix ``X X^T`` and the cross-Gram matrices ``X_o X^T`` are computed, no outer step touches
    the ``d``-dimensional features: a Newton step costs ``O(n^2 k^2 + (n k)^3 / 3)``. The steps are
    the primal ones (`MultinomialProblem`'s kernel-form solve and chord rule, written on Gram matrices).
    A direction ``v`` in parameter space enters through its *image* ``X v`` ``(n, k-1)``.
    """

    def __init__(self, problem: MultinomialProblem):
        self.problem = problem
        self.K = problem.gram()
        self.n, self.km = problem.n, problem.k - 1

    def zeros(self) -> tuple[np.ndarray, np.ndarray]:
        """The starting point ``(A, b) = 0``: ``A`` ``(n, k-1)``, ``b`` ``(k-1,)``."""
        return np.zeros((self.n, self.km)), np.zeros(self.km)

    def reduced_logits(self, A: np.ndarray, b: np.ndarray, cross: np.ndarray | None = None) -> np.ndarray:
        """Reduced logits ``(n_o, k-1)`` of the set whose cross-Gram matrix ``X_o X^T`` is ``cross`` (default: the samples)."""
        return (self.K if cross is None else cross) @ A + b

    def to_phi(self, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The primal ``Phi`` ``(k-1, D)`` of dual coordinates ``(A, b)``."""
        p = self.problem
        phi = np.zeros((self.km, p.D))
        phi[:, :p.d] = A.T @ p.X
        if p.fit_intercept:
            phi[:, p.d] = b
        return phi

    def value_grad(self, A: np.ndarray, b: np.ndarray, w: np.ndarray):
        """``(F, gradient's dual coefficients (n, k-1), intercept gradient (k-1,), probabilities (n, k))``."""
        p = self.problem
        KA = self.K @ A
        logp = log_softmax((KA + b) @ p.Q.T, axis=1)
        P = np.exp(logp)
        value = -float(w @ logp[np.arange(self.n), p.y]) + 0.5 * p.l2 * float(np.sum(A * KA))
        U = ((P - p.Y) * w[:, None]) @ p.Q
        gc = U.sum(axis=0) if p.fit_intercept else np.zeros(self.km)
        return value, U + p.l2 * A, gc, P

    def factor(self, P: np.ndarray, w: np.ndarray) -> Callable:
        """``solve(image, g_c, coef=None) -> (image of H^{-1} g, its intercept part, its dual coefficients)``.

        ``image`` is ``X g_u^T`` ``(n, k-1)``; ``coef`` (dual coefficients of ``g_u``, when it lies in
        the span of the samples) gives the result's coefficients too, else ``None`` is returned for them.
        """
        p, n, km, l2 = self.problem, self.n, self.km, self.problem.l2
        N = n * km
        C = p.curvature_roots(P, w)
        if km == 1:
            c = C[:, 0, 0]
            M = self.K * np.outer(c, c)
        else:
            M = (np.einsum("iac,jbc->iajb", C, C) * self.K[:, None, :, None]).reshape(N, N)
        M[np.diag_indices(N)] += l2
        try:
            cho = linalg.cho_factor(M, lower=True, overwrite_a=True, check_finite=False)
            Dm = C.reshape(N, km)
            if p.fit_intercept:
                schur = linalg.cho_factor(l2 * (Dm.T @ linalg.cho_solve(cho, Dm, check_finite=False)), lower=True,
                                          check_finite=False)
        except linalg.LinAlgError:
            raise GroupRobustError(SINGULAR) from None

        def z(img):  # Z_u g for the image X g_u^T: C_i (X g)_i, flattened to (N,)
            return np.einsum("iab,ib->ia", C, img).reshape(N)

        def zt(t):  # dual coefficients of Z_u^T t: C_i^T t_i
            return np.einsum("iac,ia->ic", C, t.reshape(n, km))

        def solve(img, gc, coef=None):
            vc = np.zeros(km)
            if p.fit_intercept:
                t = linalg.cho_solve(cho, z(img), check_finite=False)
                vc = linalg.cho_solve(schur, gc - Dm.T @ t, check_finite=False)
                extra = zt(Dm @ vc)
                img = img - self.K @ extra
                coef = None if coef is None else coef - extra
            s = zt(linalg.cho_solve(cho, z(img), check_finite=False))
            return (img - self.K @ s) / l2, vc, None if coef is None else (coef - s) / l2

        return solve

    def fit(self, w: np.ndarray, start: tuple[np.ndarray, np.ndarray] | None = None, tol: float = 1e-9,
            max_iter: int = 200, solve: Callable | None = None):
        """Newton with backtracking from ``start`` until the decrement is below ``tol`` (as `MultinomialProblem.fit`).

        ``solve`` (the previous outer step's, see `factor`) is reused as a chord Hessian while it makes
        fast progress; convergence is always confirmed with a Hessian factored at the result.
        Returns ``((A, b), solve at the result, probabilities (n, k), Hessians factored)``.
        """
        A, b = self.zeros() if start is None else (start[0].copy(), start[1].copy())
        value, Gd, gc, P = self.value_grad(A, b, w)
        scale = max(float(np.sum(w)), 1e-300)
        fresh = solve is None
        if fresh:
            solve = self.factor(P, w)
        n_factor, last_dec = int(fresh), np.inf
        for _ in range(max_iter):
            img, vc, coef = solve(self.K @ Gd, gc, Gd)
            dec2 = float(np.sum(Gd * img) + gc @ vc)
            if dec2 <= tol * tol * scale or (not fresh and dec2 > 0.25 * last_dec):
                if dec2 <= tol * tol * scale and fresh:
                    return (A, b), solve, P, n_factor
                # confirm at, or (the chord no longer gives fast progress) refactor at, the current point
                solve, fresh, last_dec, n_factor = self.factor(P, w), True, np.inf, n_factor + 1
                continue
            alpha = 1.0
            while True:
                cA, cb = A - alpha * coef, b - alpha * vc
                new = self.value_grad(cA, cb, w)
                if new[0] <= value - 1e-4 * alpha * dec2 + 1e-13 * abs(value) or alpha < 1e-8:
                    break
                alpha *= 0.5
            if alpha < 1e-8:
                if fresh:  # no descent along an exact Newton step: converged to machine precision
                    return (A, b), solve, P, n_factor
                solve, fresh, last_dec, n_factor = self.factor(P, w), True, np.inf, n_factor + 1
                continue
            A, b = cA, cb
            value, Gd, gc, P = new
            fresh, last_dec = False, dec2
        raise GroupRobustError(f"the last-layer Newton solve did not converge in {max_iter} iterations; "
                               "increase l2 or standardise the features")
