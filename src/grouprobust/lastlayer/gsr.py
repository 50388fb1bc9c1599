"""`GSR`: group-robust sample reweighting of held-out samples through a retrained last layer.

Specification: Qiao et al., "Group-robust sample reweighting" (Algorithm 1). Stage 2 only: the
features come from a frozen stage-1 model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.special import softmax

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer._base import LinearHead, Standardizer, native_threads
from grouprobust.lastlayer._multinomial import FORMS, DualKernelProblem, MultinomialProblem, log_softmax_rows
from grouprobust.lastlayer._validation import check_features, check_groups, check_weights, validation_given
from grouprobust.lastlayer.influence import influence_scores
from grouprobust.metrics import group_means
from grouprobust.params import NON_NEGATIVE, POSITIVE, Choice, Interval
from grouprobust.selection import select_best_index, selection_key
from grouprobust.threads import recheck_native_threads

HESSIANS = ("exact", "free")
# Relative residual (preconditioner norm) of the influence solve when it runs conjugate gradients:
# influences then agree with a direct solve to about 1.5e-7 relative (benchmarks/gsr_scale.py checks it),
# and one CG round on float32 products usually reaches it (at 1e-7 a second round followed every step).
INFLUENCE_RTOL = 2e-7


class _Split:
    """Features (raw: the problem standardises them on the fly), class indices and groups of a target or
    validation set, with per-group evaluation."""

    def __init__(self, X: np.ndarray, y: np.ndarray, g: np.ndarray):
        self.X, self.y = X, y
        #: each sample's group as an index into the sorted group ids present, and each group's size
        self.ids, self.group_of = np.unique(g, return_inverse=True)
        self.group_of = self.group_of.ravel()
        self.sizes = np.bincount(self.group_of, minlength=len(self.ids)).astype(np.float64)

    def evaluate(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probabilities (n, k), per-group mean cross-entropy (m,), per-group accuracy (m,))`` of the
        logits ``(n, k)``; the average accuracy is kept in ``last_avg_acc`` (the selection tie-break)."""
        logp = log_softmax_rows(logits)
        ce = -logp[np.arange(len(self.y)), self.y]
        hit = np.argmax(logp, axis=1) == self.y
        losses, _ = group_means(ce, self.group_of, len(self.ids))
        accs, _ = group_means(hit, self.group_of, len(self.ids))
        self.last_avg_acc = float(hit.mean())
        return np.exp(logp), losses, accs


class _PrimalHead:
    """The retrained head in parameter coordinates (`MultinomialProblem`), one outer step at a time."""

    def __init__(self, problem: MultinomialProblem, form: str, tol: float):
        self.problem, self.form, self.tol = problem, form, tol
        self.phi, self.factor, self.P = None, None, None
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # the solution and its logits one step back

    def fit(self, w: np.ndarray) -> int:
        """Retrain at weights ``w``, warm-started at the secant prediction from the last two solutions
        (their logits are kept, so the prediction costs no pass over the features); returns the number
        of Hessians built."""
        start, logits = self.phi, self.problem.last_logits
        if self.previous is not None and start is not None:
            # consecutive outer steps move the weights alike: extrapolate the path of solutions
            start, logits = 2.0 * start - self.previous[0], 2.0 * logits - self.previous[1]
        if self.phi is not None:
            self.previous = (self.phi, self.problem.last_logits)
        self.phi, self.factor, self.P, n_h = self.problem.fit(w, start, self.factor, tol=self.tol, form=self.form,
                                                              z0=logits)
        return n_h

    def logits(self, split: _Split) -> np.ndarray:
        return self.problem.logits(self.phi, split.X)

    def influence(self, split: _Split, P: np.ndarray, c: np.ndarray, exact: bool) -> tuple[np.ndarray, int]:
        """``xi_i = sum_j c_j d CE_j / dw_i`` over the split's samples (exact or first order) and Hessians built."""
        R = P.copy()
        R[np.arange(len(split.y)), split.y] -= 1.0
        G = self.problem.reduced_grad(R, split.X, c)[None]
        if not exact:
            return influence_scores(self.problem, self.P, G)[:, 0], 0
        V = self.factor.solve(G, rtol=INFLUENCE_RTOL)
        xi = influence_scores(self.problem, self.P, V, self.factor.image_of(V))[:, 0]
        return xi, self.factor.builds

    def state(self) -> np.ndarray:
        return self.phi.copy()

    def phi_of(self, state: np.ndarray) -> np.ndarray:
        return state


class _DualHead:
    """The retrained head in dual coordinates (`DualKernelProblem`): cross-Gram matrices of the target
    and validation sets are computed once, so no outer step touches the features."""

    def __init__(self, problem: MultinomialProblem, splits: list[_Split], tol: float):
        self.dual, self.tol = DualKernelProblem(problem), tol
        samples = problem.standardized(problem.X)  # n < D here: small
        self.cross = {id(s): problem.times(s.X, samples.T) for s in splits}
        self.start, self.solve, self.P = None, None, None
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # the solution one step back

    def fit(self, w: np.ndarray) -> int:
        """Retrain at weights ``w`` from the secant prediction (as `_PrimalHead.fit`); returns the Hessians factored."""
        start = self.start
        if self.previous is not None:
            start = (2.0 * start[0] - self.previous[0], 2.0 * start[1] - self.previous[1])
        self.previous = self.start
        self.start, self.solve, self.P, n_h = self.dual.fit(w, start, tol=self.tol, solve=self.solve)
        return n_h

    def logits(self, split: _Split) -> np.ndarray:
        return self.dual.reduced_logits(*self.start, self.cross[id(split)]) @ self.dual.problem.Q.T

    def influence(self, split: _Split, P: np.ndarray, c: np.ndarray, exact: bool) -> tuple[np.ndarray, int]:
        problem = self.dual.problem
        R = P.copy()
        R[np.arange(len(split.y)), split.y] -= 1.0
        Ct = (R * c[:, None]) @ problem.Q
        img, gc = self.cross[id(split)].T @ Ct, Ct.sum(axis=0) if problem.fit_intercept else np.zeros(problem.k - 1)
        if exact:
            img, gc, _ = self.solve(img, gc)
        S = (self.P - problem.Y) @ problem.Q
        return -np.sum(S * (img + gc), axis=1), 0

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.start[0].copy(), self.start[1].copy()

    def phi_of(self, state) -> np.ndarray:
        return self.dual.to_phi(*state)


class GSR(LinearHead):
    """Group-robust sample reweighting (GSR; ``hessian="free"`` gives GSR-HF).

    Learns non-negative weights (summing to one) over held-out samples ``(X, y)`` so that the
    last layer retrained on them, ``argmin sum_i w_i CE_i + (l2/2) ||W||^2`` (intercept not
    penalised), does well on every group of a group-labelled *target* set. Each outer step:

    1. retrain the head at the current weights (Newton, warm-started; exact to ``tol``);
    2. ``gamma_g <- gamma_g exp(R_g / tau)``, normalised (``R_g``: target group ``g``'s mean loss);
    3. ``xi = sum_g gamma_g dR_g/dw`` with the exact influence ``-grad R_g^T H^{-1} grad l_i``
       (``hessian="exact"``) or the first-order ``-grad R_g^T grad l_i`` (``"free"``);
    4. clip ``xi`` to root-mean-square ``clip``; ``w <- max(w - (lr / n) xi, 0)``, renormalised, where
       ``lr = step_size * step_decay ** (t // decay_every)``. ``step_size`` is thus in units of the
       mean weight ``1/n``, so the same value suits any held-out size.

    The returned head is the step with the best validation worst-group accuracy (ties: higher
    validation average accuracy, then the earliest step: `grouprobust.selection.select_best_index`);
    without validation data it is the last step. Step 0 is the
    head trained on the initial (uniform) weights.

    With ``standardize=True`` features are centred and scaled by the held-out set's statistics
    before everything (``coef_`` and ``intercept_`` still act on raw features). ``random_state`` is
    accepted for interface symmetry; the algorithm is deterministic.

    Fitted attributes: ``weights_`` ``(n,)``; ``coef_`` ``(k, d)``; ``intercept_`` ``(k,)``;
    ``classes_``; ``best_step_``; ``history_`` (one dict per step: ``step``,
    ``target_worst_group_acc``, ``target_worst_group_loss``, ``val_worst_group_acc``,
    ``val_worst_group_loss``, ``val_avg_acc``, ``gamma``, ``lr``, ``grad_rms``, ``effective_n`` (``1 / sum w^2``),
    ``n_hessians``, ``time_s`` (seconds since fit started) and, if ``groups`` were given,
    ``group_weight`` (weight mass per held-out group, diagnostic only)); ``weight_trajectory_``
    ``(s, n)`` weights at steps ``trajectory_steps_`` (at most about 21 snapshots).
    """

    parameter_constraints = {
        "l2": POSITIVE, "hessian": Choice(HESSIANS), "n_steps": NON_NEGATIVE, "step_size": NON_NEGATIVE,
        "tau": POSITIVE, "clip": POSITIVE, "step_decay": Interval(0, 1, lo_open=True), "decay_every": Interval(1),
        "tol": POSITIVE, "hessian_form": Choice(FORMS),
    }
    nullable = ("clip",)

    def __init__(self, l2: float = 0.1, hessian: str = "exact", n_steps: int = 100, step_size: float = 1.0,
                 tau: float = 1.0, clip: float = 1.0, step_decay: float = 0.1, decay_every: int = 30,
                 fit_intercept: bool = True, standardize: bool = True, tol: float = 1e-9,
                 hessian_form: str = "auto", random_state: Any = None):
        self.l2 = l2
        self.hessian = hessian
        self.n_steps = n_steps
        self.step_size = step_size
        self.tau = tau
        self.clip = clip
        self.step_decay = step_decay
        self.decay_every = decay_every
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.tol = tol
        self.hessian_form = hessian_form
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        if int(self.n_steps) != self.n_steps or int(self.decay_every) != self.decay_every:
            raise GroupRobustError(f"GSR: n_steps and decay_every must be whole numbers, got {self.n_steps} and "
                                   f"{self.decay_every}", subject="hparam:n_steps")

    def _split(self, X, y, g, name: str, d: int) -> _Split:
        X = check_features(X, f"X_{name}", n_features=d)
        return _Split(X, self._encode_more(y, len(X), f"y_{name}"), check_groups(g, len(X), f"groups_{name}"))

    @native_threads
    def fit(self, X, y, groups=None, sample_weight=None, *, X_target=None, y_target=None, groups_target=None,
            X_val=None, y_val=None, groups_val=None) -> "GSR":
        """Learn weights over ``(X, y)`` for the group-labelled target set; returns ``self``.

        ``groups`` (held-out group ids) are optional and only logged; ``sample_weight`` sets the
        starting weights (default uniform). ``X_target, y_target, groups_target`` are required;
        the validation triple is optional and used for step selection only.
        """
        self._check_params()
        start = time.perf_counter()
        X = check_features(X, "X")
        n, d = X.shape
        codes = self._encode(y, n)
        if X_target is None or y_target is None or groups_target is None:
            raise GroupRobustError("GSR.fit needs X_target, y_target and groups_target (the group-labelled target set); "
                                   "pass them as keyword arguments")
        has_val = validation_given("GSR.fit", X_val, y_val, groups_val)
        scaler = Standardizer(X, bool(self.standardize))
        target = self._split(X_target, y_target, groups_target, "target", d)
        val = self._split(X_val, y_val, groups_val, "val", d) if has_val else None
        held_groups = check_groups(groups, n, "groups") if groups is not None else None
        w = check_weights(sample_weight, n)
        w = w / w.sum()

        # the standardisation is folded into every product with the features: no standardised copies
        problem = MultinomialProblem(X, codes, len(self.classes_), float(self.l2), self.fit_intercept,
                                     *((scaler.mean, scaler.scale) if self.standardize else ()))
        form = problem.choose_form(self.hessian_form)
        if form == "kernel":
            head = _DualHead(problem, [target] + ([val] if val is not None else []), float(self.tol))
        else:
            head = _PrimalHead(problem, form, float(self.tol))
        log_gamma = np.zeros(len(target.ids))
        every = max(1, int(self.n_steps) // 20)
        history, snapshots, snapshot_steps = [], [], []
        best_key: tuple[float, float] | None = None
        best = None
        for t in range(int(self.n_steps) + 1):
            recheck_native_threads()  # a fit of many seconds follows a machine that gets busier or quieter
            n_h = head.fit(w)
            P_tar, tar_loss, tar_acc = target.evaluate(head.logits(target))
            entry: dict[str, Any] = {"step": t, "target_worst_group_acc": float(tar_acc.min()),
                                     "target_worst_group_loss": float(tar_loss.max()),
                                     "val_worst_group_acc": None, "val_worst_group_loss": None, "val_avg_acc": None,
                                     "effective_n": float(1.0 / np.sum(w ** 2)), "n_hessians": n_h}
            if val is not None:
                _, val_loss, val_acc = val.evaluate(head.logits(val))
                entry["val_worst_group_acc"] = float(val_acc.min())
                entry["val_worst_group_loss"] = float(val_loss.max())
                entry["val_avg_acc"] = val.last_avg_acc
                # the project's one selection rule: worst-group accuracy, ties to average accuracy, then earliest
                key = selection_key(entry["val_worst_group_acc"], entry["val_avg_acc"])
            else:
                key = (float(t), 0.0)  # no validation data: the last step
            if held_groups is not None:
                entry["group_weight"] = {str(gid): float(w[held_groups == gid].sum()) for gid in np.unique(held_groups)}
            if select_best_index([best_key, key]) == 1:
                best_key, best = key, (t, w.copy(), head.state())
            if t % every == 0 or t == self.n_steps:
                snapshots.append(w.copy())
                snapshot_steps.append(t)
            if t < self.n_steps:
                log_gamma += tar_loss / float(self.tau)
                gamma = softmax(log_gamma)
                # xi = sum_g gamma_g dR_g/dw is linear in the set gradient: one solve with sum_g gamma_g grad R_g
                xi, builds = head.influence(target, P_tar, (gamma / target.sizes)[target.group_of], self.hessian == "exact")
                entry["n_hessians"] += builds
                rms = float(np.sqrt(np.mean(xi ** 2)))
                if self.clip is not None and rms > self.clip:
                    xi *= self.clip / rms
                lr = float(self.step_size) * float(self.step_decay) ** (t // int(self.decay_every))
                w_new = np.maximum(w - (lr / n) * xi, 0.0)
                if w_new.sum() <= 0:
                    raise GroupRobustError("GSR: a step removed all weight; lower step_size or clip")
                w = w_new / w_new.sum()
                entry.update(gamma=gamma.tolist(), lr=lr, grad_rms=rms)
            entry["time_s"] = time.perf_counter() - start
            history.append(entry)

        self.best_step_, self.weights_, state = best
        self.coef_, self.intercept_ = scaler.unscale(*problem.to_full(head.phi_of(state)))
        self.history_ = history
        self.weight_trajectory_ = np.array(snapshots)
        self.trajectory_steps_ = np.array(snapshot_steps)
        self.n_features_in_ = d
        return self
