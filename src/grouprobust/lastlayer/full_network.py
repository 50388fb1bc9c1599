"""Influence of training-sample weights through a whole small network (GSR, Appendix E), with `torch.func`.

For a network with parameters ``theta`` trained on ``sum_i w_i CE(theta; x_i, y_i) + (l2 / 2) ||theta||^2``
(the L2 term makes the Hessian ``H`` positive definite near a minimum; parameters named in
``no_l2`` are left unpenalised), implicit differentiation gives

    d R_eval(theta*(w)) / d w_i = - grad R_eval^T H^{-1} grad CE_i,

where ``R_eval`` is the mean cross-entropy on an evaluation set. One inverse-Hessian-vector
product ``v = H^{-1} grad R_eval`` serves every sample; ``grad CE_i . v`` for all ``i`` is a single
forward-mode product. ``H^{-1} v`` is computed by one of three solvers:

* ``"dense"``: the full ``p x p`` Hessian (`torch.func.hessian`) and a Cholesky solve; tiny nets only
  (memory ``p^2``);
* ``"cg"``: conjugate gradient (`scipy.sparse.linalg.cg`) on Hessian-vector products
  (forward-over-reverse); exact up to ``cg_tol``, memory ``O(p)``;
* ``"lissa"``: LiSSA (Agarwal et al., 2017), the truncated Neumann series
  ``h_j = v + (I - H_B / scale) h_{j-1}``, ``H^{-1} v ~ h_depth / scale``, with ``H_B`` the Hessian on
  a random minibatch (full batch when ``lissa_batch_size`` is None), averaged over ``lissa_repeat``.
  It is an approximation: see the tests and docs/lastlayer.md for its accuracy.

The formula holds at a minimum of the weighted objective; `fit_weighted_network` gets there with
full-batch L-BFGS. Everything runs in float64 on a copy of the model, on the model's device.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp, linearize

from grouprobust.errors import GroupRobustError

SOLVERS = ("dense", "cg", "lissa")


class _FlatModel:
    """A model's parameters as one flat float64 vector, with the weighted objective as functions of it."""

    def __init__(self, model: nn.Module, l2: float, no_l2: Sequence[str]):
        self.model = copy.deepcopy(model).double().eval()
        self.device = next(self.model.parameters()).device
        self.names = [n for n, _ in self.model.named_parameters()]
        self.shapes = [p.shape for _, p in self.model.named_parameters()]
        self.sizes = [p.numel() for _, p in self.model.named_parameters()]
        unknown = set(no_l2) - set(self.names)
        if unknown:
            raise GroupRobustError(f"no_l2 names unknown parameter {sorted(unknown)[0]!r}; parameters are: "
                                   + ", ".join(self.names))
        self.penalty_mask = torch.cat([torch.full((s,), 0.0 if n in no_l2 else 1.0, dtype=torch.float64)
                                       for n, s in zip(self.names, self.sizes)]).to(self.device)
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.l2 = float(l2)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.reshape(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy, shape ``(n,)``."""
        logits = functional_call(self.model, self.unflatten(theta), (x,))
        return nn.functional.cross_entropy(logits, y, reduction="none")

    def objective(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
        """``scale * sum_i w_i CE_i + (l2 / 2) ||theta||^2`` (penalised parameters only)."""
        return scale * (w * self.losses(theta, x, y)).sum() + 0.5 * self.l2 * (self.penalty_mask * theta ** 2).sum()

    def hvp_fn(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> H v`` for the objective on ``(x, y, w)`` at ``self.theta`` (forward-over-reverse).

        `torch.func.linearize` traces the product once; each call then costs about one
        forward-and-backward pass without the transforms' Python overhead (50x faster on tiny nets).
        """
        with _quiet():
            return linearize(grad(lambda t: self.objective(t, x, y, w)), self.theta)[1]

    def batch_hvp(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """``H_B v`` for the objective with the data term on ``(x, y, w)`` multiplied by ``scale`` (one
        forward-over-reverse product; used for LiSSA's minibatches, whose cost must not grow with n)."""
        g = grad(lambda t: scale * (w * self.losses(t, x, y)).sum())
        return jvp(g, (self.theta,), (v,))[1] + self.l2 * self.penalty_mask * v


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the deprecation/tracing warnings torch emits from inside `linearize` (not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _as_tensors(fm: _FlatModel, X, y, w=None):
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X, dtype=torch.float64, device=fm.device)
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=torch.long, device=fm.device)
    if len(x) != len(yt):
        raise GroupRobustError(f"X has {len(x)} samples but y has {len(yt)}; they must match")
    if w is None:
        return x, yt
    wt = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w, dtype=torch.float64, device=fm.device)
    if wt.shape != (len(x),) or bool((wt < 0).any()) or not bool(torch.isfinite(wt).all()):
        raise GroupRobustError(f"sample_weight must be {len(x)} finite non-negative numbers, got shape {tuple(wt.shape)}")
    return x, yt, wt


def dense_hessian(model: nn.Module, X, y, sample_weight, l2: float, no_l2: Sequence[str] = ()) -> np.ndarray:
    """The ``p x p`` Hessian of the weighted, L2-regularised objective at the model's parameters (float64)."""
    fm = _FlatModel(model, l2, no_l2)
    x, yt, w = _as_tensors(fm, X, y, sample_weight)
    return hessian(lambda t: fm.objective(t, x, yt, w))(fm.theta).cpu().numpy()


def inverse_hvp(model: nn.Module, X, y, sample_weight, vector, l2: float, *, solver: str = "cg",
                no_l2: Sequence[str] = (), cg_tol: float = 1e-10, cg_maxiter: int | None = None,
                lissa_depth: int = 1000, lissa_repeat: int = 1, lissa_batch_size: int | None = None,
                lissa_scale: float | None = None, seed: int = 0) -> np.ndarray:
    """``H^{-1} vector`` for the weighted objective's Hessian ``H`` at the model's parameters, shape ``(p,)``."""
    if solver not in SOLVERS:
        raise GroupRobustError(f"unknown inverse-Hessian solver {solver!r}; use one of: {', '.join(SOLVERS)}")
    fm = _FlatModel(model, l2, no_l2)
    x, yt, w = _as_tensors(fm, X, y, sample_weight)
    v = torch.as_tensor(np.asarray(vector), dtype=torch.float64, device=fm.device)
    if v.shape != fm.theta.shape:
        raise GroupRobustError(f"vector has shape {tuple(v.shape)} but the model has {fm.theta.numel()} parameters")
    return _solve(fm, x, yt, w, v, solver, cg_tol, cg_maxiter, lissa_depth, lissa_repeat, lissa_batch_size,
                  lissa_scale, seed).cpu().numpy()


def _solve(fm: _FlatModel, x, y, w, v, solver, cg_tol, cg_maxiter, depth, repeat, batch_size, scale, seed) -> torch.Tensor:
    if solver == "dense":
        h = hessian(lambda t: fm.objective(t, x, y, w))(fm.theta)
        try:
            factor = torch.linalg.cholesky(h)
        except RuntimeError:
            raise GroupRobustError("the Hessian is not positive definite at these parameters; raise l2 or fit the "
                                   "model to a minimum first (fit_weighted_network)") from None
        return torch.cholesky_solve(v[:, None], factor)[:, 0]
    hvp = fm.hvp_fn(x, y, w)
    if solver == "cg":
        from scipy.sparse.linalg import LinearOperator, cg

        p = fm.theta.numel()
        op = LinearOperator((p, p), dtype=np.float64,
                            matvec=lambda z: hvp(torch.as_tensor(np.ravel(z), device=fm.device)).cpu().numpy())
        out, info = cg(op, v.cpu().numpy(), rtol=cg_tol, atol=0.0, maxiter=cg_maxiter or 10 * p)
        if info != 0:
            raise GroupRobustError(f"conjugate gradient did not converge in {cg_maxiter or 10 * p} iterations; raise "
                                   "l2 (the Hessian may be ill-conditioned or indefinite) or cg_maxiter")
        return torch.as_tensor(out, device=fm.device)
    return _lissa(fm, x, y, w, v, hvp, depth, repeat, batch_size, scale, seed)


def _lissa(fm: _FlatModel, x, y, w, v, full_hvp, depth: int, repeat: int, batch_size: int | None,
           scale: float | None, seed: int) -> torch.Tensor:
    if scale is None:
        scale = 1.1 * _largest_eigenvalue(full_hvp, v)
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    sampled = batch_size is not None and batch_size < n
    estimates = []
    for _ in range(repeat):
        h = v.clone()
        for _ in range(depth):
            if sampled:
                idx = torch.randint(n, (batch_size,), generator=gen).to(fm.device)
                # unbiased minibatch estimate of H v: the data term rescaled by n / batch_size
                hv = fm.batch_hvp(x[idx], y[idx], w[idx], h, n / batch_size)
            else:
                hv = full_hvp(h)
            h = v + h - hv / scale
        estimates.append(h / scale)
    return torch.stack(estimates).mean(0)


def _largest_eigenvalue(hvp: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int = 50) -> float:
    z = start / start.norm()
    value = 0.0
    for _ in range(steps):
        hz = hvp(z)
        value = float(hz.norm())
        z = hz / max(value, 1e-300)
    return value


def full_network_influence(model: nn.Module, X, y, sample_weight, X_eval, y_eval, l2: float, *,
                           solver: str = "cg", no_l2: Sequence[str] = (), **solver_options) -> np.ndarray:
    """Derivative of the mean cross-entropy on ``(X_eval, y_eval)`` with respect to each ``sample_weight[i]``.

    ``theta*(w) = argmin sum_i w_i CE(theta; x_i, y_i) + (l2 / 2) ||theta||^2`` over all parameters of
    ``model`` except those named in ``no_l2``; the model's current parameters are taken as ``theta*(w)``
    (fit with `fit_weighted_network` first). Returns a float64 array of shape ``(n,)``, in units of
    eval loss (nats) per unit of weight. ``solver`` is ``dense``, ``cg`` or ``lissa``; ``solver_options``
    go to `inverse_hvp` (``cg_tol``, ``lissa_depth``, ``lissa_batch_size``, ...).
    """
    if solver not in SOLVERS:
        raise GroupRobustError(f"unknown inverse-Hessian solver {solver!r}; use one of: {', '.join(SOLVERS)}")
    if l2 <= 0:
        raise GroupRobustError(f"l2 must be > 0 so the Hessian is positive definite, got {l2}")
    fm = _FlatModel(model, l2, no_l2)
    x, yt, w = _as_tensors(fm, X, y, sample_weight)
    xe, ye = _as_tensors(fm, X_eval, y_eval)
    g_eval = grad(lambda t: fm.losses(t, xe, ye).mean())(fm.theta)
    opts = {"cg_tol": 1e-10, "cg_maxiter": None, "lissa_depth": 1000, "lissa_repeat": 1, "lissa_batch_size": None,
            "lissa_scale": None, "seed": 0}
    unknown = set(solver_options) - set(opts)
    if unknown:
        raise GroupRobustError(f"unknown solver option {sorted(unknown)[0]!r}; use: {', '.join(opts)}")
    opts.update(solver_options)
    v = _solve(fm, x, yt, w, g_eval, solver, opts["cg_tol"], opts["cg_maxiter"], opts["lissa_depth"],
               opts["lissa_repeat"], opts["lissa_batch_size"], opts["lissa_scale"], opts["seed"])
    # grad CE_i . v for every i at once: one forward-mode product of the per-sample losses
    directional = jvp(lambda t: fm.losses(t, x, yt), (fm.theta,), (v,))[1]
    return (-directional).detach().cpu().numpy()


def fit_weighted_network(model: nn.Module, X, y, sample_weight, l2: float, *, no_l2: Sequence[str] = (),
                         max_iter: int = 500, tol: float = 1e-12, newton_steps: int = 5,
                         newton_max_params: int = 2000) -> nn.Module:
    """Minimise the weighted, L2-regularised objective over all of ``model``'s parameters; returns a float64
    copy of the model at the (local) minimum.

    Full-batch L-BFGS, then (for at most ``newton_max_params`` parameters) up to ``newton_steps`` Newton
    steps with the dense Hessian: influence values are derivatives at the exact minimum, and an
    L-BFGS stop at gradient norm 1e-7 shifts finite-difference checks by about 1%.
    """
    fm = _FlatModel(model, l2, no_l2)
    x, yt, w = _as_tensors(fm, X, y, sample_weight)
    theta = fm.theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = fm.objective(theta, x, yt, w)
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    if theta.numel() <= newton_max_params:
        for _ in range(newton_steps):
            g = grad(lambda t: fm.objective(t, x, yt, w))(theta)
            if float(g.norm()) < 1e-13:
                break
            factor, info = torch.linalg.cholesky_ex(hessian(lambda t: fm.objective(t, x, yt, w))(theta))
            if int(info) != 0:  # not positive definite here: keep the L-BFGS point
                break
            theta = theta - torch.cholesky_solve(g[:, None], factor)[:, 0]
    params = fm.unflatten(theta)
    with torch.no_grad():
        for name, p in fm.model.named_parameters():
            p.copy_(params[name])
    return fm.model
