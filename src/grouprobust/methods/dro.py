"""Distributionally robust objectives: online GroupDRO over groups, CVaR and chi-square DRO over examples."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from grouprobust.distributed import gather_batch, sum_over_ranks
from grouprobust.errors import GroupRobustError
from grouprobust.losses import LossFn
from grouprobust.methods.base import Batch, Method, TrainData, to_list
from grouprobust.methods.registry import register_method
from grouprobust.methods.reweighting import WeightedSampling
from grouprobust.methods.sampling import balanced_probabilities
from grouprobust.models import predict_logits
from grouprobust.params import NON_NEGATIVE, Interval, Param


@register_method
class GroupDRO(WeightedSampling):
    """Online GroupDRO (Sagawa et al. 2020, Algorithm 1): exponentiated-gradient ascent on group weights ``q``.

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
    distributed = ""  # the group loss sums and counts are summed over the ranks (group_mean_losses)
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
        self.n_groups = data.n_groups
        counts = data.dataset.group_counts().astype(np.float64)
        present = counts > 0
        freq = counts / counts.sum()
        balanced = present / present.sum()
        if hparams["sampler"] == "balanced":
            self.sample_probs = balanced_probabilities(data.dataset.g, data.n_groups)
        sampled = balanced if self.sample_probs is not None else freq
        init = freq if hparams["q_init"] == "empirical" else balanced
        as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=data.device)  # noqa: E731
        with np.errstate(divide="ignore"):
            #: log of the group weights q, kept in log space so that a group's weight can shrink for many
            #: steps and grow back (``-inf`` for groups with no training example: their q stays 0).
            self.log_q = as_tensor(np.where(present, np.log(init), -np.inf))
        #: ``1 / s_g`` (0 for empty groups): turns the sampled batch's mean into an estimate of ``sum_g q_g R_g``.
        self.inv_sampled = as_tensor(np.where(present, 1.0 / np.maximum(sampled, 1e-300), 0.0))
        #: the generalization adjustment ``C / sqrt(n_g)`` added to each group's loss.
        self.adjustment = as_tensor(np.where(present, hparams["gen_adj"] / np.sqrt(np.maximum(counts, 1.0)), 0.0))

    @property
    def q(self) -> torch.Tensor:
        """Current group weights (sum to 1)."""
        return self.log_q.exp()

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        losses = self.loss_fn(model(batch.x), batch.y)
        with torch.no_grad():
            self.ascend(group_mean_losses(losses.detach().float(), batch.g, self.n_groups))
            weights = (self.q * self.inv_sampled).index_select(0, batch.g)
        return (weights * losses).mean()

    def ascend(self, group_losses: torch.Tensor) -> None:
        """The exponentiated-gradient step on ``q`` for one batch's group mean losses ``L_g`` ``(groups,)``:
        ``q_g <- q_g exp(eta (L_g + C / sqrt(n_g)))``, normalised; in log space, where normalising is a
        log-softmax. Stays on the device: nothing is read back."""
        self.log_q = torch.log_softmax(self.log_q + self.eta * (group_losses + self.adjustment), dim=0)

    def epoch_log(self) -> dict[str, Any]:
        return {"group_weights": to_list(self.q)}

    def end_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Keep the model after the last epoch: `run_info` reads its per-group training losses (after the loop,
        so that no step of it waits for the host)."""
        if epoch == self.hparams["epochs"]:
            self._final_model = model

    def _final_group_losses(self) -> np.ndarray | None:
        """Mean training loss of every group under the model after the last epoch (one pass over train)."""
        model = getattr(self, "_final_model", None)
        if model is None:
            return None
        logits = predict_logits(model, self.data.dataset.x, self.data.device).float().to(self.data.device)
        with torch.no_grad():
            losses = self.loss_fn(logits, self.data.y).float().cpu().numpy()
        groups = np.asarray(self.data.dataset.g)
        counts = np.maximum(np.bincount(groups, minlength=self.n_groups), 1)
        return np.bincount(groups, weights=losses, minlength=self.n_groups) / counts

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_q": self.log_q}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_q = state["log_q"].to(self.log_q.device)

    def run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"final_group_weights": to_list(self.q)}
        losses = self._final_group_losses()
        if losses is not None:
            info["final_group_losses"] = [float(v) for v in losses]
            stalled = stalled_at_chance(self.q.cpu().numpy(), losses, self.data.n_classes)
            if stalled:
                names = self.data.dataset.group_names or [str(g) for g in range(self.n_groups)]
                heavy = ", ".join(f"{names[g]} (q {self.q[g].item():.2f}, loss {losses[g]:.2f})" for g in stalled)
                info["warnings"] = [
                    f"groupdro's objective ended at chance (ln {self.data.n_classes} = "
                    f"{math.log(self.data.n_classes):.2f}) on the groups holding most of q: {heavy}; no classifier fits "
                    "them at once (on inferred groups: groups of opposite labels in the same region, made from a "
                    "reference model's outputs or errors), so the minimax solution predicts near-constant "
                    "probabilities there; use resample on these groups, or groups that a classifier can fit"]
        return info


#: A group's final training loss counts as "at chance" above this fraction of ``ln(classes)``.
CHANCE_FRACTION = 0.9


def stalled_at_chance(q: np.ndarray, group_losses: np.ndarray, n_classes: int) -> list[int]:
    """The groups (ids, heaviest first) that together hold at least half of ``q`` when every one of them ends
    with a training loss of at least `CHANCE_FRACTION` of ``ln(n_classes)`` (cross-entropy of a uniform
    prediction); empty when GroupDRO's weight sits on groups it fits better than chance."""
    order = np.argsort(-q, kind="stable")
    heavy, mass = [], 0.0
    for g in order:
        heavy.append(int(g))
        mass += float(q[g])
        if mass >= 0.5:
            break
    chance = CHANCE_FRACTION * math.log(n_classes)
    return heavy if all(group_losses[g] >= chance for g in heavy) else []


def group_mean_losses(losses: torch.Tensor, g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``(groups,)`` mean of ``losses`` ``(batch,)`` over each group's members in the batch (0 for a group
    with none), as group_DRO computes it: a ``(groups, batch)`` membership matrix times the losses, divided
    by each group's count. One product, on the losses' device, with no read-back (CUDA's bincount would).
    In a distributed run the sums and counts are summed over the ranks first: the means of the global batch."""
    members = (g == torch.arange(n_groups, device=g.device)[:, None]).to(losses.dtype)
    sums, counts = sum_over_ranks(torch.stack([members @ losses, members.sum(dim=1)]))
    return sums / counts.clamp_min(1.0)


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
    distributed = ""  # the worst case is taken over the global batch's losses, gathered from every rank

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        self.level_value: float = hparams[self.level]

    def worst_case(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The worst-case weighted sum of the batch's losses; in a distributed run the weights are those of the
        global batch's losses (gathered from every rank), and the sum over this rank's part is scaled to a
        mean-like share (times global / local size) as the loop expects of every rank's loss."""
        losses = self.loss_fn(model(batch.x), batch.y)
        n = losses.shape[0]
        with torch.no_grad():
            everyone, start = gather_batch(losses.detach())
            weights = self.worst_case(everyone)[start:start + n]
        return (weights * losses).sum() * (everyone.shape[0] / max(n, 1))


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
