"""Distributionally robust objectives: online GroupDRO over groups, CVaR and chi-square DRO over examples."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from grouprobust.errors import GroupRobustError
from grouprobust.losses import LossFn
from grouprobust.methods.base import Batch, Method, TrainData, to_list
from grouprobust.methods.registry import register_method
from grouprobust.methods.reweighting import WeightedSampling
from grouprobust.methods.sampling import balanced_probabilities
from grouprobust.params import NON_NEGATIVE, Interval, Param


#: Largest batch membership matrix (groups x batch size, floats) that `GroupDRO.batches` builds for the whole
#: epoch at once: it saves one small op a step but writes ``groups`` floats per example an epoch, which
#: costs more than it saves for many groups (colored-digits' 100).
PLANNED_MEMBERS_MAX = 4096


@register_method
class GroupDRO(WeightedSampling):
    """Online GroupDRO (Sagawa et al. 2020): exponentiated-gradient ascent on group weights ``q``.

    Each step, with ``L_g`` the batch's mean loss on group ``g`` (0 if absent) and ``n_g`` its training
    size: ``q_g <- q_g * exp(eta * (L_g + C / sqrt(n_g)))``, then ``q`` is normalised. The model minimises
    ``mean_i (q_{g_i} / s_{g_i}) * loss_i`` where ``s_g`` is the probability that the sampler draws
    group ``g`` (``sampler=balanced``: group-balanced draws as in the paper's experiments, ``s_g = 1/G``;
    ``sampler=shuffle``: ERM's shuffled batches, ``s_g`` = training frequency). That is an unbiased
    estimate of ``sum_g q_g R_g``, so with ``eta=0`` GroupDRO is a static GRW step for step: resampling
    (balanced, ``q_init=uniform``), importance weighting (shuffle, uniform) or ERM (shuffle,
    ``q_init=empirical``). Groups without a training example keep ``q_g = 0``. Weight decay defaults
    high: GroupDRO relies on strong L2 (Sagawa et al.; the GRW paper, Theorem 9).
    """

    name = "groupdro"
    needs = "full"
    same_as = "SubpopBench GroupDRO, group_DRO (Sagawa et al.)"
    summary = "online GroupDRO: group weights q_g <- q_g exp(eta loss_g), objective sum_g q_g loss_g, strong L2"
    params = {
        "eta": Param(0.1, ("log_uniform", 1e-3, 1.0), "step size of the exponentiated-gradient update of q",
                     NON_NEGATIVE),
        "gen_adj": Param(0.0, ("uniform", 0.0, 4.0), "generalization adjustment C: adds C/sqrt(n_g) to group g's loss",
                         NON_NEGATIVE),
        "q_init": Param("uniform", ("choice", ["uniform", "empirical"]),
                        "initial q: uniform over non-empty groups, or the training group frequencies"),
        "sampler": Param("balanced", ("choice", ["balanced", "shuffle"]),
                         "group-balanced draws with replacement, or ERM's shuffled batches"),
        "weight_decay": Param(1e-2, ("log_uniform", 1e-4, 1.0),
                              "L2 penalty through the optimizer (GroupDRO relies on strong L2)", NON_NEGATIVE),
    }

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        if data.g is None:
            raise GroupRobustError("groupdro needs training group labels; use the label regime 'full'", subject="regime")
        self.eta: float = hparams["eta"]
        counts = data.dataset.group_counts().astype(np.float64)
        present = counts > 0
        freq = counts / counts.sum()
        balanced = present / present.sum()
        init = freq if hparams["q_init"] == "empirical" else balanced
        if hparams["sampler"] == "balanced":
            self.sample_probs = balanced_probabilities(data.dataset.g, data.n_groups)
        sampled = balanced if self.sample_probs is not None else freq
        with np.errstate(divide="ignore"):
            log_q = np.where(present, np.log(init), -np.inf)
        inv_sampled = np.where(present, 1.0 / np.maximum(sampled, 1e-300), 0.0)
        adj = np.where(present, hparams["gen_adj"] / np.sqrt(np.maximum(counts, 1.0)), 0.0)
        as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=data.device)  # noqa: E731
        #: log of the group weights q (``-inf`` for groups with no training example).
        self.log_q = as_tensor(log_q)
        self.inv_sampled = as_tensor(inv_sampled)  # 1 / s_g, 0 for empty groups
        self.eta_adjustment = as_tensor(self.eta * adj)
        self.adjusted = bool(np.any(adj > 0))
        self.n_groups = data.n_groups
        #: Row ``g`` is the one-hot vector of group ``g``: a batch's ``(batch, groups)`` membership matrix is
        #: one row gather and its group sums one matrix-vector product, and no step reads anything back from
        #: the device (CUDA's bincount would).
        self.one_hot = torch.eye(data.n_groups, dtype=torch.float32, device=data.device)
        #: `_scale` of each batch size met so far (the shuffle sampler's last batch is smaller).
        self._scales: dict[int, torch.Tensor] = {}
        #: This epoch's batches by ``id``: ``(index tensor, group counts clamped to >= 1, ``(groups, batch)``
        #: membership matrix or None)``, see `batches`.
        self._planned: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    @property
    def q(self) -> torch.Tensor:
        """Current group weights (sum to 1)."""
        return self.log_q.exp()

    def batches(self) -> Iterator[torch.Tensor]:
        """The sampler's batches. Every batch's group counts, and its membership matrix while that is small
        (`PLANNED_MEMBERS_MAX`), are computed here for the whole epoch at once (a few ops an epoch instead
        of a few a step) and found again in `loss` by the batch's index tensor."""
        order = self.epoch_order()
        batches = order.split(self.batch_size)
        g = self.data.g.index_select(0, order)
        counts_all = batch_group_counts(g, self.batch_size, self.n_groups).clamp_min_(1)
        counts = counts_all.unbind(0)
        if self.n_groups * self.batch_size <= PLANNED_MEMBERS_MAX:
            # Each row divided by its batch's group counts, then split along the batch dimension of the
            # transposed rows: each piece is the (groups, batch) matrix of 1/count entries `update` multiplies
            # by, made in a few calls an epoch rather than a transpose and a division a step.
            batch_of = torch.arange(g.numel(), device=g.device).floor_divide_(self.batch_size)
            rows = self.one_hot.index_select(0, g).div_(counts_all.index_select(0, batch_of))
            members: Sequence[torch.Tensor | None] = rows.t().split(self.batch_size, 1)
        else:
            members = [None] * len(batches)
        self._planned = {id(idx): (idx, c, m, bg)
                         for idx, c, m, bg in zip(batches, counts, members, g.split(self.batch_size))}
        return iter(batches)

    def _plan(self, idx: torch.Tensor) -> tuple:
        """This epoch's plan for the index tensor ``idx`` (see `batches`), or ``(idx, None, None, None)`` when
        ``idx`` is not one of this epoch's batches (then everything is computed per step)."""
        planned = self._planned.get(id(idx))
        return planned if planned is not None and planned[0] is idx else (idx, None, None, None)

    def batch(self, idx: torch.Tensor) -> Batch:
        """As `Method.batch`, with a planned batch's groups taken from the plan (a view, not a gather)."""
        return self.data.batch(idx, self._plan(idx)[3])

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        losses = self.loss_fn(model(batch.x), batch.y)
        _, counts, members_t, _ = self._plan(batch.idx)
        weights = self.update(losses.detach(), batch.g, counts, members_t)
        objective = losses.dot(weights.index_select(0, batch.g))
        # A division in the graph costs a forward and a backward op; `update` folds it into the weights
        # where that changes no bit.
        return objective if _is_power_of_two(losses.shape[0]) else objective / losses.shape[0]

    def update(self, losses: torch.Tensor, g: torch.Tensor, counts: torch.Tensor | None = None,
               members_t: torch.Tensor | None = None) -> torch.Tensor:
        """One exponentiated-gradient step of ``q`` on a batch's (detached) ``losses`` of groups ``g``; returns
        the per-group weights of the batch's objective, ``q_g / s_g``, already divided by the batch size ``b``
        when ``b`` is a power of two (a division by a power of two is exact, so the mean has the same bits).

        ``members_t`` is the batch's ``(groups, batch)`` membership with entries ``1 / n_g`` (its one-hot rows,
        transposed, each divided by the batch's count of its group), so ``members_t @ losses`` is the vector
        of group mean losses ``L_g``; ``counts`` are those counts clamped to >= 1. Both are computed here
        when not given. A handful of ops on ``G``-sized tensors, none reading back from the device, none
        recorded by autograd: this runs every step and must cost little next to the model's own step.

        Convention: ``L_g`` is summed as ``sum_i l_i / n_g`` (one ``addmv`` into ``log q``), not as group_DRO's
        ``(sum_i l_i) / n_g``: the same to float32 rounding (the weights match group_DRO's formulas to
        float precision), one op a step fewer.
        """
        if members_t is None:
            members_t = self.one_hot.index_select(0, g).t()
            members_t = members_t / (members_t.sum(1).clamp_min_(1) if counts is None else counts)[:, None]
        # L_g = sum_i l_i / n_g as one product with the 1/n_g-scaled membership, added into log q by the same op
        self.log_q.addmv_(members_t, losses.float(), alpha=self.eta)
        if self.adjusted:
            self.log_q.add_(self.eta_adjustment)
        q = torch.softmax(self.log_q, dim=0)
        torch.log(q, out=self.log_q)
        return q.mul_(self._scale(losses.shape[0]))

    def _scale(self, batch_size: int) -> torch.Tensor:
        """``1 / s_g``, divided by ``batch_size`` if it is a power of two (computed once per size)."""
        scale = self._scales.get(batch_size)
        if scale is None:
            scale = self.inv_sampled / batch_size if _is_power_of_two(batch_size) else self.inv_sampled
            self._scales[batch_size] = scale
        return scale

    def epoch_log(self) -> dict[str, Any]:
        return {"group_weights": to_list(self.q)}

    def run_info(self) -> dict[str, Any]:
        return {"final_group_weights": to_list(self.q)}


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def batch_group_counts(g: torch.Tensor, batch_size: int, n_groups: int) -> torch.Tensor:
    """``(batches, groups)`` float counts of each group in each ``batch_size`` slice of the group ids ``g``
    (the last slice may be shorter), on ``g``'s device without reading anything back (CUDA's bincount would)."""
    n_batches = -(-g.numel() // batch_size)
    cell = torch.arange(g.numel(), device=g.device).floor_divide_(batch_size).mul_(n_groups).add_(g)
    counts = torch.zeros(n_batches * n_groups, dtype=torch.float32, device=g.device)
    # Sums of ones are exact in any order, so accumulation order cannot change a count.
    counts.index_put_((cell,), torch.ones((), device=g.device).expand(g.numel()), accumulate=True)
    return counts.view(n_batches, n_groups)


def cvar_weights(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """Worst-case weights of CVaR at level ``alpha`` on a batch of ``n`` losses: the maximiser of
    ``sum_i q_i loss_i`` over ``0 <= q_i <= 1 / (alpha n)``, ``sum_i q_i = 1`` (Levy et al. 2020).

    ``1 / (alpha n)`` on the ``k = floor(alpha n)`` largest losses and the remaining mass
    ``1 - k / (alpha n)`` on the next largest (exact when ``alpha n`` is not a whole number; ties
    broken by position). ``alpha n <= 1`` puts all the mass on the largest loss.
    """
    n = losses.numel()
    cap = 1.0 / (alpha * n)
    if cap >= 1.0:
        k, rest = 0, 1.0
    else:
        # The epsilon keeps a whole-number alpha * n from flooring one below through rounding.
        k = min(n, int(math.floor(alpha * n + 1e-9)))
        rest = max(0.0, 1.0 - k * cap)
    order = torch.topk(losses, min(n, k + 1)).indices
    weights = torch.zeros_like(losses)
    weights[order[:k]] = cap
    if k < n and rest > 1e-9:  # a whole-number alpha * n leaves only rounding here
        weights[order[k]] = rest
    return weights


def chi2_weights(losses: torch.Tensor, rho: float) -> torch.Tensor:
    """Worst-case distribution ``q`` over a batch in the chi-square ball ``(1/2n) sum (n q_i - 1)^2 <= rho``.

    The maximiser of ``sum q_i loss_i`` is ``q_i ∝ (loss_i - eta)_+`` with ``eta`` set so the
    constraint is tight; for each support size ``k`` (the ``k`` largest losses, mean ``m``, variance
    ``v``) that ``eta`` is ``m - sqrt(v / (c k - 1))`` with ``c = (2 rho + 1) / n``, and the right ``k`` is
    the one whose ``eta`` lies between the ``k``-th and ``(k+1)``-th largest loss. Returns uniform
    weights when ``rho <= 0`` or all losses are equal, the argmax when ``rho >= (n - 1) / 2``.
    """
    n = losses.numel()
    uniform = torch.full_like(losses, 1.0 / n)
    if rho <= 0 or n == 1:
        return uniform
    c = (2.0 * rho + 1.0) / n
    if c >= 1.0:
        out = torch.zeros_like(losses)
        out[losses.argmax()] = 1.0
        return out
    s = torch.sort(losses, descending=True).values.double()
    k = torch.arange(1, n + 1, device=losses.device, dtype=torch.float64)
    mean = s.cumsum(0) / k
    var = (s.pow(2).cumsum(0) / k - mean.pow(2)).clamp_min(0.0)
    denom = c * k - 1.0
    eta = mean - torch.sqrt(var / denom.clamp_min(1e-12))
    next_loss = torch.cat([s[1:], s.new_tensor([-math.inf])])
    valid = (denom > 0) & (eta < s) & (eta >= next_loss)
    # Without host synchronisation: the first valid k by argmax (first maximum), uniform when none is valid.
    threshold = eta[valid.int().argmax()].to(losses.dtype)
    excess = (losses - threshold).clamp_min(0.0)
    return torch.where(valid.any(), excess / excess.sum(), uniform)


class _ExampleDRO(Method):
    """Shared objective: the batch's per-example losses reweighted by a worst-case distribution.

    Subclasses set ``level`` (the name of the parameter that sets the ball's size, whose checked
    value is ``self.level_value``) and `worst_case`.
    """

    level: ClassVar[str]

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        self.level_value: float = hparams[self.level]

    def worst_case(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        losses = self.loss_fn(model(batch.x), batch.y)
        with torch.no_grad():
            weights = self.worst_case(losses.detach())
        return (weights * losses).sum()


@register_method
class CVaRDRO(_ExampleDRO):
    """CVaR DRO: the mean of the worst ``alpha`` fraction of each batch's per-example losses."""

    name = "cvar-dro"
    needs = "none"
    same_as = "SubpopBench CVaRDRO"
    summary = "CVaR DRO: minimise the mean of the worst alpha fraction of per-example losses in each batch"
    params = {"alpha": Param(0.2, ("log_uniform", 0.01, 1.0), "CVaR level: fraction of worst examples averaged",
                             Interval(0, 1, lo_open=True))}
    level = "alpha"

    def worst_case(self, losses: torch.Tensor) -> torch.Tensor:
        return cvar_weights(losses, self.level_value)


@register_method
class Chi2DRO(_ExampleDRO):
    """Chi-square DRO (Levy et al. 2020): the worst-case expected loss over a chi-square ball of radius ``rho``."""

    name = "chi2-dro"
    needs = "none"
    summary = "chi-square DRO: worst-case mean loss over distributions within chi-square radius rho of each batch"
    params = {"rho": Param(1.0, ("log_uniform", 0.01, 10.0), "chi-square ball radius rho", NON_NEGATIVE)}
    level = "rho"

    def worst_case(self, losses: torch.Tensor) -> torch.Tensor:
        return chi2_weights(losses, self.level_value)
