"""Strong convexity of a regularised cross-entropy head, and the bound that ties head alignment to the worst-group gap.

A head is ``theta = [W | b]`` (classes × (dim + 1)). Softmax is unchanged when one vector is added to
every class row, so heads are compared and differentiated on the *centred* subspace (rows summing
to zero); projecting a head onto it keeps its predictions and lowers its L2 penalty. On that
subspace the regularised group objective ``F_g(theta) = L_g(theta) + l2/2 ||theta||²`` is
``mu``-strongly convex with ``mu = l2 + (smallest eigenvalue of the data Hessian)``.

The bound (our computable form of the paper's claim (ii), derived from strong convexity alone): with
``F = max_g F_g`` (GroupDRO's regularised objective), ``g*`` the worst group at the ERM head
``theta_E``, and any GroupDRO head ``theta_D``,

    F(theta_E) − F(theta_D)  <=  ||grad F_g*(theta_E)|| · d  −  mu/2 · d²,
    d² = ||theta_E − theta_D||² = r_E² + r_D² − 2 r_E r_D cos(theta_E, theta_D),

so the worst-group (regularised training) loss gap is controlled by how far the two heads are
apart — their norms and their alignment — and shrinks as ``mu`` (the L2 strength) grows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from grouprobust.errors import GroupRobustError


def head_theta(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``[W | b]`` projected onto the centred subspace (mean class row removed), float64."""
    theta = np.concatenate([np.asarray(weight, np.float64), np.asarray(bias, np.float64)[:, None]], axis=1)
    return theta - theta.mean(axis=0, keepdims=True)


def _augment(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def _centring_basis(k: int) -> np.ndarray:
    """An orthonormal k × (k − 1) basis of the vectors orthogonal to all-ones."""
    q, _ = np.linalg.qr(np.concatenate([np.ones((k, 1)), np.eye(k)[:, : k - 1]], axis=1))
    return q[:, 1:]


def group_objectives(theta: np.ndarray, x: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int,
                     l2: float) -> np.ndarray:
    """``F_g(theta)`` (mean cross-entropy in nats + l2/2 ||theta||²) per group; NaN for empty groups."""
    xa = _augment(x)
    logp = np.log(np.clip(softmax(xa @ theta.T, axis=1), 1e-300, None))
    ce = -logp[np.arange(len(y)), y]
    out = np.full(n_groups, np.nan)
    for k in range(n_groups):
        if (g == k).any():
            out[k] = ce[g == k].mean()
    return out + 0.5 * l2 * float(np.sum(theta ** 2))


def group_gradient(theta: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Gradient of ``mean CE + l2/2 ||theta||²`` over the rows given (classes × (dim + 1))."""
    xa = _augment(x)
    p = softmax(xa @ theta.T, axis=1)
    p[np.arange(len(y)), y] -= 1.0
    return p.T @ xa / len(y) + l2 * theta


def min_curvature(theta: np.ndarray, x: np.ndarray, l2: float) -> float:
    """Smallest eigenvalue of the Hessian of ``mean CE + l2/2 ||theta||²`` on the centred subspace.

    The cross-entropy Hessian does not depend on the labels: mean over rows of
    ``(diag p − p pᵀ) ⊗ x xᵀ``, here restricted to the centred subspace.
    """
    xa = _augment(x)
    p = softmax(xa @ theta.T, axis=1)
    c = _centring_basis(theta.shape[0])
    pc = p @ c  # n × (k−1)
    # C^T (diag p − p p^T) C for each row, then the Kronecker product with x x^T, averaged.
    sc = np.einsum("kl,ik,km->ilm", c, p, c) - np.einsum("il,im->ilm", pc, pc)
    h = np.einsum("ilm,ia,ib->lamb", sc, xa, xa, optimize=True) / len(xa)
    m = sc.shape[1] * xa.shape[1]
    return float(np.linalg.eigvalsh(h.reshape(m, m))[0]) + l2


def alignment_bound(theta_e: np.ndarray, theta_d: np.ndarray, x: np.ndarray, y: np.ndarray, g: np.ndarray,
                    n_groups: int, l2: float, grid: int = 5) -> dict[str, float]:
    """The worst-group loss gap between an ERM and a GroupDRO head, and its strong-convexity bound.

    Returns ``loss_gap`` = F(theta_E) − F(theta_D) (nats), ``bound`` (same units), ``mu`` (the
    smallest eigenvalue of the regularised worst-group Hessian over ``grid`` points of the segment
    between the heads), ``grad_norm``, ``dist`` (d) and ``cos_heads`` (cosine of the two full heads).
    """
    if l2 < 0:
        raise GroupRobustError("L2 strength must be >= 0")
    f_e = group_objectives(theta_e, x, y, g, n_groups, l2)
    f_d = group_objectives(theta_d, x, y, g, n_groups, l2)
    worst = int(np.nanargmax(f_e))
    mask = g == worst
    grad_norm = float(np.linalg.norm(group_gradient(theta_e, x[mask], y[mask], l2)))
    mu = min(min_curvature(theta_e + t * (theta_d - theta_e), x[mask], l2) for t in np.linspace(0, 1, grid))
    r_e, r_d = float(np.linalg.norm(theta_e)), float(np.linalg.norm(theta_d))
    cos_heads = float(np.sum(theta_e * theta_d) / (r_e * r_d)) if r_e > 0 and r_d > 0 else 1.0
    dist = float(np.sqrt(max(r_e ** 2 + r_d ** 2 - 2 * r_e * r_d * cos_heads, 0.0)))
    return {"loss_gap": float(np.nanmax(f_e) - np.nanmax(f_d)), "bound": grad_norm * dist - 0.5 * mu * dist ** 2,
            "mu": mu, "grad_norm": grad_norm, "dist": dist, "cos_heads": cos_heads}
