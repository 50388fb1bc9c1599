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
at every step: an earlier step's Hessian (a `Preconditioner`, applied through its inverse)
preconditions conjugate gradients on Hessian-vector products at the current point (``4 n D k``
flops each instead of ``n D^2 k^2`` for a rebuild), and it is rebuilt once the iterations it costs
beyond a fresh one's rate would have paid for a rebuild (`Preconditioner.charge`). Precision is
split by need: the preconditioner's Hessian and the conjugate-gradient products use a float32 copy
of the features (a Newton direction or a refinement correction needs no more), while gradients,
the residuals of influence solves and every reported number stay float64. The kernel form's GSR
path (`DualKernelProblem`) works in dual coordinates on Gram matrices computed once, so no step
touches the ``d``-dimensional features at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg
from scipy.special import log_softmax, softmax

from grouprobust.errors import GroupRobustError
from grouprobust.threads import recheck_native_threads

FORMS = ("auto", "kernel", "parameter")
NEWTON_CG, SOLVE_CG = 6, 10  # CG iterations after which a Newton step / a refinement round rebuilds the factor
SINGLE_RTOL = 1e-6  # the smallest relative residual asked of CG on float32 products
# A preconditioner built at the current point cuts CG's residual by about RHO_FRESH per iteration; it is
# rebuilt once the iterations spent beyond that rate since it was built reach REBUILD_EXCESS. A stale one
# costs more than its extra iterations (its looser decrement estimate also costs Newton iterations and
# their float64 passes), so the rule rebuilds early: at the CivilComments shape 4 (against 16, the
# products alone) took 432 Hessian-vector products and 10 builds against 513 and 6; 6 of 9 interleaved
# pairs of fits were faster, by up to 5%.
RHO_FRESH, REBUILD_EXCESS = 0.03, 4
SINGULAR = ("the weighted last-layer Hessian is singular (the weighted samples leave the intercept undetermined, "
            "e.g. all weight on one class); keep positive weight on every class or pass fit_intercept=False")


_POTRS = linalg.get_lapack_funcs("potrs", (np.zeros(1),))


def cho_solve(chol: tuple, b: np.ndarray) -> np.ndarray:
    """``A^{-1} b`` for a scipy ``cho_factor`` result ``chol`` of ``A``: LAPACK's ``potrs`` called directly
    (scipy's ``cho_solve`` checks and converts its arguments at each call, which dominates the solves
    of GSR's small systems)."""
    x, info = _POTRS(chol[0], b, lower=chol[1])
    if info != 0:
        raise GroupRobustError(f"a Cholesky solve failed (LAPACK potrs info {info})")
    return x


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of logits ``z`` ``(n, k)``: the same numbers as ``scipy.special.log_softmax(z, axis=1)``.

    With few classes the row maximum and row sum are taken column by column (whole-column ufuncs):
    numpy's reduction along a short last axis costs about three times as much, and GSR takes this of
    every candidate of every Newton step.
    """
    k = z.shape[1]
    if k > 8:
        return log_softmax(z, axis=1)
    top = z[:, 0].copy()
    for j in range(1, k):
        np.maximum(top, z[:, j], out=top)
    out = z - top[:, None]
    e = np.exp(out)
    total = e[:, 0].copy()
    for j in range(1, k):
        total += e[:, j]
    out -= np.log(total)[:, None]
    return out


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
class Preconditioner:
    """An approximate Hessian ``M`` (built at an earlier point, in float32) applied as ``M^{-1}`` through
    its explicit inverse ``(p, p)``: one matrix product, several times faster than the two triangular
    solves of its Cholesky factor, and a preconditioner needs no more than float64 rounding of it.

    ``excess`` counts the conjugate-gradient iterations it has cost beyond a fresh one's rate
    (`charge`); it is `stale` once they would have paid for a rebuild.
    """

    inverse: np.ndarray
    excess: int = 0

    def apply(self, G: np.ndarray) -> np.ndarray:
        """``M^{-1} G`` for ``G`` of shape ``(m, ...)`` (each row flattened)."""
        m = G.shape[0]
        return (G.reshape(m, -1) @ self.inverse).reshape(G.shape)

    def charge(self, iterations: int, rtol: float) -> None:
        """Record a CG run that took ``iterations`` to reach relative residual ``rtol``."""
        fresh = int(np.ceil(np.log(max(rtol, 1e-300)) / np.log(RHO_FRESH)))
        self.excess += max(0, iterations - fresh)

    @property
    def stale(self) -> bool:
        return self.excess >= REBUILD_EXCESS


@dataclass
class Factor:
    """A factorised Hessian ``H(Phi, w)``: ``solve(G)`` returns ``H^{-1} G`` for ``G`` of shape ``(m, k-1, D)``.

    ``chol`` is the parameter form's Cholesky factor of this Hessian when ``exact``, else the
    `Preconditioner` (an earlier Hessian) of its conjugate gradients; ``builds`` counts the Hessians it built;
    ``image`` keeps the last iterative solution's image, which saves influence scores a pass over ``X``.
    """

    solve: Callable[..., np.ndarray]
    form: str
    chol: tuple | Preconditioner | None = None
    exact: bool = True
    builds: int = 0
    image: tuple[np.ndarray, np.ndarray] | None = None  # (a solution x, flattened; its `MultinomialProblem.image`)

    def image_of(self, V: np.ndarray) -> np.ndarray | None:
        """The image ``X~ V`` computed by the last iterative solve if it returned ``V``, else None."""
        if self.image is not None and self.image[0].size == V.size and np.array_equal(self.image[0].ravel(), V.ravel()):
            return self.image[1]
        return None


def pcg(apply_h: Callable[[np.ndarray], np.ndarray], precond: Callable[[np.ndarray], np.ndarray], G: np.ndarray,
        rtol: float, max_iter: int) -> tuple[np.ndarray, int, bool, float]:
    """Preconditioned conjugate gradients for ``H x = g``, one independent run per row of ``G`` ``(m, p)``.

    Stops a row when its residual in the preconditioner's norm, ``sqrt(r^T M^{-1} r)``, is below
    ``rtol`` times that of ``g``. Returns ``(x (m, p), iterations, every row converged, ritz)``:
    ``ritz`` is the smallest Ritz value of ``M^{-1} H`` from the first row's Lanczos coefficients
    (an estimate, from above, of its smallest eigenvalue; ``inf`` when no iteration ran).
    """
    x = np.zeros_like(G)
    r = G.copy()
    z = precond(r)
    rz = np.einsum("mp,mp->m", r, z)
    goal = (rtol * rtol) * rz
    active = rz > goal
    p = z.copy()
    it = 0
    lanczos: list[tuple[float, float]] = []  # first row's (alpha, beta) while it is active
    while np.any(active) and it < max_iter:
        it += 1
        recheck_native_threads()  # a few ms an iteration: a machine that gets busy mid-fit is seen within a second
        Hp = apply_h(p)
        pHp = np.einsum("mp,mp->m", p, Hp)
        alpha = np.where(active, rz / np.where(pHp > 0, pHp, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * Hp
        z = precond(r)
        rz_new = np.einsum("mp,mp->m", r, z)
        first = bool(active[0]) and pHp[0] > 0
        active &= (rz_new > goal) & (pHp > 0)
        beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        if first:
            lanczos.append((float(alpha[0]), float(rz_new[0] / rz[0]) if rz[0] > 0 else 0.0))
        p = z + beta[:, None] * p
        rz = rz_new
    return x, it, not np.any(active), smallest_ritz_value(lanczos)


def smallest_ritz_value(lanczos: list[tuple[float, float]]) -> float:
    """Smallest eigenvalue of the Lanczos tridiagonal matrix of a CG run's ``(alpha_j, beta_j)`` pairs."""
    if not lanczos:
        return float("inf")
    alphas, betas = np.array(lanczos).T
    diag = 1.0 / alphas
    diag[1:] += betas[:-1] / alphas[:-1]
    off = np.sqrt(np.maximum(betas[:-1], 0.0)) / alphas[:-1]
    if len(diag) == 1:
        return float(diag[0])
    return float(linalg.eigh_tridiagonal(diag, off, eigvals_only=True, select="i", select_range=(0, 0))[0])


class MultinomialProblem:
    """Fixed data ``(X, y)`` of one weighted multinomial problem; every array is float64.

    ``X`` is ``(n, d)``, ``y`` integer classes in ``0..k-1``. Weights are passed per call, so the
    same problem serves every outer step of GSR.

    ``center`` and ``scale`` (``(d,)`` each) make the model act on standardised features
    ``(x - center) / scale`` without materialising them: every product with ``X`` (or with another
    set passed to `logits` / `reduced_grad`, always given raw) folds the standardisation into the
    small factor, so no standardised copy of the ``n x d`` data is made. The float32 copy used by
    approximate Hessian-vector products is standardised row chunk by row chunk.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int, l2: float, fit_intercept: bool = True,
                 center: np.ndarray | None = None, scale: np.ndarray | None = None):
        if l2 <= 0:
            raise GroupRobustError(f"l2 must be > 0 (the inner problem must be strictly convex), got {l2}; pass l2=1e-3 or so")
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.center: np.ndarray | None = None
        self.inv_scale: np.ndarray | None = None
        if center is not None or scale is not None:
            d = self.X.shape[1]
            self.center = np.zeros(d) if center is None else np.asarray(center, dtype=np.float64)
            self.inv_scale = 1.0 / (np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64))
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
        self.last_logits: np.ndarray | None = None  # logits (n, k) at the last fit's result

    # -- products with the (standardised) features ------------------------------------------------
    def standardized(self, X: np.ndarray) -> np.ndarray:
        """``(X - center) / scale`` as a new array (``X`` itself without standardisation)."""
        return X if self.center is None else (X - self.center) * self.inv_scale

    def times(self, X: np.ndarray, V: np.ndarray) -> np.ndarray:
        """``standardized(X) @ V`` for raw ``X`` ``(m, d)`` and ``V`` ``(d, c)``: ``(m, c)``, without copying ``X``."""
        if self.center is None:
            return X @ V
        Vs = V * self.inv_scale[:, None]
        return X @ Vs - self.center @ Vs

    def t_times(self, X: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``standardized(X).T @ T`` for raw ``X`` ``(m, d)`` and ``T`` ``(m, c)``: ``(d, c)``, without copying ``X``."""
        if self.center is None:
            return X.T @ T
        return (X.T @ T - np.outer(self.center, T.sum(axis=0))) * self.inv_scale[:, None]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Standardised rows ``lo:hi`` of the problem's own features (a view when there is no standardisation)."""
        return self.standardized(self.X[lo:hi])

    def single(self) -> np.ndarray:
        """The standardised features as float32 ``(n, d)``, built once in row chunks."""
        if self._X32 is None:
            X32 = np.empty(self.X.shape, dtype=np.float32)
            if self.center is None:
                X32[...] = self.X
            else:
                # chunks that stay in a core's cache, one float64 buffer: half the time of whole temporaries
                chunk = 512
                buf = np.empty((chunk, self.d))
                for lo in range(0, self.n, chunk):
                    rows = self.X[lo:lo + chunk]
                    b = buf[:len(rows)]
                    np.subtract(rows, self.center, out=b)
                    np.multiply(b, self.inv_scale, out=X32[lo:lo + chunk], casting="same_kind")
            self._X32 = X32
        return self._X32

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
        z = self.times(self.X if X is None else X, phi[:, :self.d].T)
        if self.fit_intercept:
            z = z + phi[:, self.d]
        return z @ self.Q.T

    def reduced_grad(self, R: np.ndarray, X: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``sum_i scale_i (Q^T r_i) x~_i^T`` as a ``(k-1, D)`` array, for residuals ``R = P - Y`` ``(n, k)`` of raw ``X``."""
        S = (R * scale[:, None]) @ self.Q
        g = np.empty((self.k - 1, self.D))
        g[:, :self.d] = self.t_times(X, S).T
        if self.fit_intercept:
            g[:, self.d] = S.sum(axis=0)
        return g

    # -- objective --------------------------------------------------------------------------------
    def value_grad(self, phi: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(F(Phi), grad F (k-1, D), probabilities P (n, k))`` at weights ``w``."""
        value, grad, P, _ = self.objective(phi, w)
        return value, grad, P

    def objective(self, phi: np.ndarray, w: np.ndarray, z: np.ndarray | None = None):
        """``(F(Phi), grad F, P, logits)`` at weights ``w``; ``z`` (the logits at ``Phi``, e.g. an earlier
        fit's at other weights) saves the pass over ``X`` that computes them."""
        if z is None:
            z = self.logits(phi)
        logp = log_softmax_rows(z)
        P = np.exp(logp)
        value = -float(w @ logp[np.arange(self.n), self.y]) + 0.5 * self.l2 * float(np.sum(phi[:, :self.d] ** 2))
        grad = self.reduced_grad(P - self.Y, self.X, w)
        grad[:, :self.d] += self.l2 * phi[:, :self.d]
        return value, grad, P, z

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

    def image(self, V: np.ndarray) -> np.ndarray:
        """``x~_i . v`` for every sample ``i`` and direction ``V`` ``(m, k-1, D)``: ``(n, m, k-1)``, one pass over
        ``X``."""
        m, km, d = V.shape[0], self.k - 1, self.d
        U = self.times(self.X, V[:, :, :d].reshape(m * km, d).T).reshape(self.n, m, km)
        if self.fit_intercept:
            U += V[:, :, d][None]
        return U

    def hess_vec(self, B: np.ndarray, V: np.ndarray, single: bool = False, image: np.ndarray | None = None) -> np.ndarray:
        """``H V`` for ``V`` ``(m, k-1, D)`` at the curvature ``B`` (`curvature`): two passes over ``X``, or one when
        ``image`` (`image` of ``V``) is given.

        ``single=True`` makes the passes over a float32 copy of ``X`` (half the memory traffic,
        relative error about 1e-7; ``image`` is then not used): good enough for a Newton direction or
        an iterative-refinement correction, never for a residual.
        """
        if single:
            return self._single_hess_vec(B, V)
        m, km, d = V.shape[0], self.k - 1, self.d
        U = self.image(V) if image is None else image
        T = (U * B[:, None, None] if B.ndim == 1 else np.einsum("nab,nmb->nma", B, U)).reshape(self.n, m * km)
        out = np.empty_like(V)
        out[:, :, :d] = self.t_times(self.X, T).T.reshape(m, km, d) + self.l2 * V[:, :, :d]
        if self.fit_intercept:
            out[:, :, d] = T.sum(axis=0).reshape(m, km)
        return out

    def _single_hess_vec(self, B: np.ndarray, V: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """`hess_vec` on the float32 copy, both passes made per row chunk while it is in cache (the feature
        sets together exceed the last-level cache, so two whole passes would read the copy twice from memory)."""
        m, km, d = V.shape[0], self.k - 1, self.d
        X32 = self.single()
        Vu = V[:, :, :d].reshape(m * km, d).T.astype(np.float32)
        Bm = B[:, None, None] if B.ndim == 1 else B
        acc = np.zeros((m * km, d), dtype=np.float32)
        tsum = np.zeros((m, km))
        for lo in range(0, self.n, chunk):
            Xc = X32[lo:lo + chunk]
            U = (Xc @ Vu).astype(np.float64).reshape(len(Xc), m, km)
            if self.fit_intercept:
                U += V[:, :, d][None]
            Bc = Bm[lo:lo + chunk]
            T = U * Bc if B.ndim == 1 else np.einsum("nab,nmb->nma", Bc, U)
            acc += T.reshape(len(Xc), m * km).T.astype(np.float32) @ Xc
            tsum += T.sum(axis=0)
        out = np.empty_like(V)
        out[:, :, :d] = acc.astype(np.float64).reshape(m, km, d) + self.l2 * V[:, :, :d]
        if self.fit_intercept:
            out[:, :, d] = tsum
        return out

    def hessian_matrix(self, B: np.ndarray, chunk: int = 4096, single: bool = False) -> np.ndarray:
        """The ``(k-1) D``-square Hessian at curvature ``B``, built in row chunks (no full copy of ``X``).

        ``single=True`` forms each chunk's products in float32 from the float32 copy (half the time;
        relative error about 1e-6): a preconditioner, not an exact factor.
        """
        km, D, d = self.k - 1, self.D, self.d
        Bm = B[:, None, None] if B.ndim == 1 else B
        dtype = np.float32 if single else np.float64
        if single:
            Bm = Bm.astype(np.float32)
        H = np.zeros((km, D, km, D))
        # One buffer for every chunk's scaled rows, with the intercept's column sqrt(c) appended: a diagonal
        # block, its intercept row and column included, is then a single symmetric rank-k update, and no
        # chunk allocates (fresh temporaries of this size cost page faults, about a fifth of the build).
        scaled = np.empty((min(chunk, self.n), D), dtype=dtype)
        for lo in range(0, self.n, chunk):
            Xc = self.single()[lo:lo + chunk] if single else self.rows(lo, lo + chunk)
            Bc = Bm[lo:lo + chunk]
            Ys = scaled[:len(Xc)]
            for a in range(km):
                root = np.sqrt(np.maximum(Bc[:, a, a], 0.0))
                np.multiply(Xc, root[:, None], out=Ys[:, :d])
                if self.fit_intercept:
                    Ys[:, d] = root
                H[a, :, a, :] += Ys.T @ Ys  # numpy computes A.T @ A with a symmetric rank-k update
                for b in range(a + 1, km):
                    c = Bc[:, a, b]
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

    def preconditioner(self, B: np.ndarray) -> Preconditioner:
        """A `Preconditioner` for Hessians near the one at curvature ``B`` (built in float32: `hessian_matrix`)."""
        H = self.hessian_matrix(B, single=True)
        # numpy's LAPACK, not scipy's: numpy's BLAS pool has just built H, and scipy's separate OpenBLAS
        # pool would compete with its threads while they spin down (~0.1 s; 80-120 ms a factorisation).
        try:
            np.linalg.cholesky(H)  # the check that H is positive definite
        except np.linalg.LinAlgError:
            raise GroupRobustError(SINGULAR) from None
        inverse = np.linalg.inv(H)
        return Preconditioner(0.5 * (inverse + inverse.T))

    def cho_apply(self, chol: tuple | Preconditioner, G: np.ndarray) -> np.ndarray:
        """``M^{-1} G`` for a Cholesky factor (`cholesky`) or a `Preconditioner` ``chol`` and ``G`` ``(m, k-1, D)``."""
        if isinstance(chol, Preconditioner):
            return chol.apply(G)
        m = G.shape[0]
        out = cho_solve(chol, G.reshape(m, -1).T)
        return out.T.reshape(G.shape)

    def iterative_factor(self, B: np.ndarray, chol: tuple | Preconditioner, exact: bool, max_cg: int = SOLVE_CG, rounds: int = 3
                         ) -> Factor:
        """A `Factor` of the Hessian at curvature ``B``: direct when ``chol`` factors it (``exact``), else
        mixed-precision iterative refinement preconditioned by ``chol``.

        ``solve(G, rtol)`` (default ``1e-12``) then repeats: residual ``G - H x`` in float64 (two passes
        over ``X``), correction by conjugate gradients on float32 Hessian-vector products; it stops when
        the float64 residual is below ``rtol`` times ``G``'s (both in the preconditioner's norm), and
        falls back to building the exact factor when a round stops converging fast (``builds`` counts that).
        """
        factor = Factor(lambda G, rtol=1e-12: None, "parameter", chol, exact, 0)
        shape = (self.k - 1, self.D)

        def solve(G: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
            if factor.exact:
                return self.cho_apply(factor.chol, G)
            m = G.shape[0]
            g = G.reshape(m, -1)
            precond = lambda R: self.cho_apply(factor.chol, R.reshape(m, *shape)).reshape(m, -1)  # noqa: E731
            goal = rtol * rtol * np.einsum("mp,mp->m", g, precond(g))
            x, r = np.zeros_like(g), g
            for done in range(rounds + 1):
                rz = np.einsum("mp,mp->m", r, precond(r))
                if np.all(rz <= goal):
                    return x.reshape(G.shape)  # the image of this x, if computed, is in ``factor.image``
                if done == rounds:
                    break
                # float32 products reach about 1e-6 relative: ask no more of one round
                inner = max(float(np.sqrt(np.min(goal / np.where(rz > 0, rz, 1.0)))), SINGLE_RTOL)
                d, its, ok, _ = pcg(lambda V: self.hess_vec(B, V.reshape(m, *shape), single=True).reshape(m, -1),
                                    precond, r, inner, max_cg)
                if isinstance(factor.chol, Preconditioner):
                    factor.chol.charge(its, inner)
                if not ok:
                    break
                x = x + d
                image = self.image(x.reshape(G.shape))
                r = g - self.hess_vec(B, x.reshape(G.shape), image=image).reshape(m, -1)
                factor.image = (x, image)
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
            Xs = self.standardized(self.X)
            self._gram = Xs @ Xs.T
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

        def z_u(V: np.ndarray) -> np.ndarray:
            """``Z_u v`` for ``V`` of shape (m, k-1, d): result (N, m)."""
            m = V.shape[0]
            XV = self.times(self.X, V.reshape(m * km, d).T).reshape(n, m, km)  # x_i . v_b
            return np.matmul(C, XV.transpose(0, 2, 1)).reshape(N, m)

        def z_u_t(T: np.ndarray) -> np.ndarray:
            """``Z_u^T t`` for ``T`` of shape (N, m): result (m, k-1, d)."""
            m = T.shape[1]
            S = np.matmul(C.transpose(0, 2, 1), T.reshape(n, km, m))  # (n, k-1, m)
            return self.t_times(self.X, S.reshape(n, km * m)).T.reshape(km, m, d).transpose(1, 0, 2)

        if self.fit_intercept:
            KiD = cho_solve(cho, Dm)
            schur = linalg.cho_factor(l2 * (Dm.T @ KiD), lower=True, check_finite=False)

        def solve(G: np.ndarray, rtol: float | None = None) -> np.ndarray:
            gu = G[:, :, :d]
            out = np.empty_like(G)
            h = gu
            if self.fit_intercept:
                t = cho_solve(cho, z_u(gu))  # (K + l2)^{-1} Z_u g_u
                vc = cho_solve(schur, G[:, :, d].T - Dm.T @ t)  # (k-1, m)
                out[:, :, d] = vc.T
                h = gu - z_u_t(Dm @ vc)
            s = cho_solve(cho, z_u(h))
            out[:, :, :d] = (h - z_u_t(s)) / l2
            return out

        return Factor(solve, "kernel")

    # -- the inner solve ------------------------------------------------------------------------
    def fit(self, w: np.ndarray, phi0: np.ndarray | None = None, factor: Factor | None = None, tol: float = 1e-9,
            max_iter: int = 200, form: str = "auto", polish: bool = False,
            z0: np.ndarray | None = None) -> tuple[np.ndarray, Factor, np.ndarray, int]:
        """Minimise ``F`` at weights ``w`` by Newton's method with backtracking, warm-started at ``phi0``.

        ``factor`` (e.g. the previous outer step's) is reused: in the kernel form as a chord Hessian
        while it makes fast progress, in the parameter form as the preconditioner of conjugate-gradient
        Newton steps until they stop converging fast. Stops when the Newton decrement
        ``sqrt(g^T H^{-1} g / sum(w))`` is below ``tol`` (in the parameter form with a stale factor, the
        decrement is estimated as ``g^T M^{-1} g`` over the smallest Ritz value of ``M^{-1} H`` seen in
        this solve's CG runs, with a safety factor of 2). ``z0`` (the logits at ``phi0``, e.g.
        `last_logits` after the previous fit) saves one pass over ``X``. Returns ``(Phi, factor at Phi,
        probabilities (n, k), number of Hessians built)`` and keeps the logits at ``Phi`` in
        ``last_logits``; the factor's ``solve`` is exact (direct, or iterative refinement to ``rtol``).
        ``polish=True`` then takes one more exact Newton step and factors the Hessian there, so the
        result is at machine precision whichever path reached ``tol`` (one-shot use).
        """
        if self.choose_form(form) == "parameter":
            phi, factor, P, builds = self._fit_preconditioned(w, phi0, factor, tol, max_iter, z0)
        else:
            phi, factor, P, builds = self._fit_chord(w, phi0, factor, tol, max_iter, form)
        if polish:
            phi = phi - factor.solve(self.value_grad(phi, w)[1][None])[0]
            self.last_logits = self.logits(phi)
            P = softmax(self.last_logits, axis=1)
            factor, builds = self.factorize(phi, w, P, form), builds + 1
        return phi, factor, P, builds

    def _line_search(self, phi, value, step, dec2, w):
        """Backtracking along ``-step``: ``(alpha, candidate, its value, gradient, probabilities, logits)``;
        alpha < 1e-8 means none."""
        alpha = 1.0
        while True:
            cand = phi - alpha * step
            new_value, new_grad, new_P, new_z = self.objective(cand, w)
            # The slack absorbs rounding in F once the decrease is below machine precision.
            if new_value <= value - 1e-4 * alpha * dec2 + 1e-13 * abs(value) or alpha < 1e-8:
                return alpha, cand, new_value, new_grad, new_P, new_z
            alpha *= 0.5

    def _fit_preconditioned(self, w, phi0, factor, tol, max_iter, z0=None, max_cg: int = NEWTON_CG):
        # Inexact Newton: each step's conjugate gradients stop at a relative residual
        # eta = min(0.1, estimated Newton decrement) (Eisenstat-Walker forcing terms: Newton's fast local
        # convergence is kept while far-from-converged steps take one or two iterations). The
        # preconditioner is a Hessian built in float32 at an earlier point (this fit's or the previous
        # outer step's), rebuilt here when it is stale (`Preconditioner.charge`) or conjugate gradients
        # stop converging.
        phi = self.zeros() if phi0 is None else phi0.copy()
        value, grad, P, z = self.objective(phi, w, z0 if phi0 is not None else None)
        scale = max(float(np.sum(w)), 1e-300)
        goal = tol * tol * scale
        chol = factor.chol if factor is not None and factor.form == "parameter" else None
        builds, shape = 0, (1, self.k - 1, self.D)
        ritz = 0.0  # smallest eigenvalue of M^{-1} H estimated so far (0: no estimate yet, so no early stop)
        for _ in range(max_iter):
            B = self.curvature(P, w)
            fresh = chol is None or (isinstance(chol, Preconditioner) and chol.stale)
            if fresh:
                chol, builds, ritz = self.preconditioner(B), builds + 1, 1.0
            rz = float(np.sum(grad * self.cho_apply(chol, grad[None])[0]))
            if rz <= 0.5 * ritz * goal:  # decrement^2 <= rz / lambda_min, with a factor 2 for the estimate
                self.last_logits = z
                return phi, self.iterative_factor(B, chol, False), P, builds
            # ... but no smaller than the step needs to land below the stopping threshold (with a margin of 4):
            # a last correction from a decrement just above it then takes one or two iterations, not five
            dec = float(np.sqrt(max(rz, 0.0) / scale))
            eta = min(0.1, max(dec, 0.25 * tol * np.sqrt(0.5 * (ritz or 1.0)) / max(dec, 1e-300)))
            eta = max(eta, 1e-5)
            x, its, ok, run_ritz = pcg(lambda V: self.hess_vec(B, V.reshape(shape), single=True).reshape(1, -1),
                                       lambda R: self.cho_apply(chol, R.reshape(shape)).reshape(1, -1),
                                       grad.reshape(1, -1), eta, max_cg)
            if isinstance(chol, Preconditioner):
                chol.charge(its, eta)
            if not ok and not fresh:  # the preconditioner has gone stale: rebuild it here
                chol = None
                continue
            ritz = run_ritz if ritz == 0.0 else min(ritz, run_ritz)
            step = x.reshape(grad.shape)
            dec2 = float(np.sum(grad * step))
            alpha, cand, new_value, new_grad, new_P, new_z = self._line_search(phi, value, step, dec2, w)
            if alpha < 1e-8:
                if fresh:  # no descent along a Newton step on a fresh factor: converged to machine precision
                    self.last_logits = z
                    return phi, self.iterative_factor(B, chol, False), P, builds
                chol = None
                continue
            phi, value, grad, P, z = cand, new_value, new_grad, new_P, new_z
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
            alpha, cand, new_value, new_grad, new_P, _ = self._line_search(phi, value, step, dec2, w)
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
        phi[:, :p.d] = p.t_times(p.X, A).T
        if p.fit_intercept:
            phi[:, p.d] = b
        return phi

    def value_grad(self, A: np.ndarray, b: np.ndarray, w: np.ndarray):
        """``(F, gradient's dual coefficients (n, k-1), intercept gradient (k-1,), probabilities (n, k))``."""
        p = self.problem
        KA = self.K @ A
        logp = log_softmax_rows((KA + b) @ p.Q.T)
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
                schur = linalg.cho_factor(l2 * (Dm.T @ cho_solve(cho, Dm)), lower=True,
                                          check_finite=False)
        except linalg.LinAlgError:
            raise GroupRobustError(SINGULAR) from None

        def z(img):  # Z_u g for the image X g_u^T: C_i (X g)_i, flattened to (N,)
            return np.einsum("iab,ib->ia", C, img).reshape(N)

        def zt(t):  # dual coefficients of Z_u^T t: C_i^T t_i
            return np.einsum("iac,ia->ic", C, t.reshape(n, km))

        if p.fit_intercept:
            # The intercept's correction is linear in its km coefficients: its dual coefficients E, their
            # image K E and the solve U of that image are computed once per factor, so each solve makes
            # one triangular solve pair and one Gram product instead of two of each.
            E = np.stack([zt(Dm[:, j]) for j in range(km)], axis=-1)  # (n, km, km)
            KE = np.einsum("ij,jak->iak", self.K, E)
            U = np.stack([cho_solve(cho, z(KE[..., j])) for j in range(km)], axis=-1)  # (N, km)

        def solve(img, gc, coef=None):
            t = cho_solve(cho, z(img))
            vc = np.zeros(km)
            if p.fit_intercept:
                vc = cho_solve(schur, gc - Dm.T @ t)
                img = img - KE @ vc
                coef = None if coef is None else coef - E @ vc
                t = t - U @ vc
            s = zt(t)
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
