"""GERNE: loss extrapolation between a biased and a less-biased batch (ICCV 2025, arXiv 2503.13236).

Each step draws two half-batches from the training set, both uniform over classes and uniform
over the samples inside a group, that differ only in the conditional attribute distribution
``p(a|y)``:

* biased batch ``B_b``: ``p_b(a|y) = alpha_ya`` (the training proportions ``|X_ya| / |X_y|``);
* less-biased batch ``B_lb``: ``p_lb(a|y) = alpha_ya + c (1/A - alpha_ya)``, ``0 < c <= 1``.

The objective is ``L_ext = L_lb + beta (L_lb - L_b)`` (one forward pass over the concatenated
half-batches, one backward pass). In expectation it is the loss under the simulated distribution

    p_ext(a|y) = (1 + beta) p_lb(a|y) - beta p_b(a|y) = alpha_ya + c (beta + 1) (1/A - alpha_ya).

**Admissible beta.** ``p_ext`` are the effective per-group weights of ``L_ext``; they must stay
non-negative for every group. Write ``k = c (beta + 1)``.

* A group with ``alpha_ya > 1/A`` (over-represented) loses weight as ``k`` grows:
  ``alpha_ya + k (1/A - alpha_ya) >= 0  <=>  k <= alpha_ya / (alpha_ya - 1/A)``. The tightest such
  group, the one with the largest ``alpha_ya`` (the paper's ``alpha_y''a''``), gives
  ``beta_max = alpha'' / (c (alpha'' - 1/A)) - 1`` (e.g. C-MNIST at 0.5 % conflict, ``A = 10``,
  ``c = 0.5``: ``0.995 / (0.5 * 0.895) - 1 = 1.2235``, the paper's bound).
* A group with ``alpha_ya < 1/A`` only asks ``k >= -alpha_ya / (1/A - alpha_ya)``, i.e. some
  ``beta <= -1``; the paper's lower bound ``beta_min = -1`` (``L_ext = L_b``: ERM) is tighter.

So ``beta`` must lie in ``[-1, beta_max]`` (``beta_max = inf`` when no group is over-represented).
``beta = -1`` is ERM on the biased batch, ``c = 1, beta = 0`` is group-balanced resampling,
``c (beta + 1) = 1`` balances groups in expectation, and ``c (beta + 1) > 1`` over-weights the
minority groups (the paper's worst-group regime).

**Empty groups.** A (class, attribute) group with no training sample cannot be drawn. ``A`` is
therefore taken per class as ``A_y``, the number of attribute values observed in class ``y``
(``A_y = A`` when no group is empty, the paper's setting), and the formulas above use ``1/A_y``.
Then ``p_lb`` is still the mixture ``(1 - c) p_b + c * uniform`` over the drawable groups, and
``c = 1`` is uniform over them.

**Adaptive beta** (``beta_schedule=adaptive``; the paper names a fixed, dataset-sensitive beta as a
limitation). ``beta`` is then the *ceiling* of the extrapolation factor and ``beta_floor`` its floor
(both checked against ``[-1, beta_max]``). A relative loss gap ``r = (L_lb - L_b) / L_lb`` says how
much worse the model does where the bias is weaker, and the next beta is
``floor + (ceiling - floor) * clip(r / beta_gap_scale, 0, 1)``: extrapolate hard while the model leans
on the bias, fall back towards ``floor`` once both distributions are fitted alike. With
``beta_signal=train`` the gap comes from moving averages (momentum ``beta_ema``) of the two
half-batch losses, updated every step; with ``beta_signal=val`` (``gerne`` only) from the validation
split's per-group losses weighted as ``p_lb`` and ``p_b`` (classes uniform), once an epoch, which
reads validation group labels during training. Training begins at the floor. Every value lies in
``[floor, ceiling]`` within ``[-1, beta_max]``; ``history.jsonl`` logs the epoch's mean, minimum,
maximum and last beta.

**Unknown attributes** (`GERNEPseudo`, ``gerne-pseudo``): an ERM model (trained first in the
run, or loaded from a run directory's ``model.pt``) marks a training sample bias-aligned
(pseudo-attribute 0) if its softmax confidence on the true label exceeds ``threshold``, else
bias-conflicting (1); GERNE then runs on these ``2 x n_classes`` pseudo-groups. Only validation
group labels are read (for model selection, by the loop).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper
from grouprobust.data.dataset import GroupDataset
from grouprobust.methods.base import Batch, Method, to_list
from grouprobust.methods.context import MethodContext
from grouprobust.methods.registry import register_method
from grouprobust.methods.sampling import batches_per_epoch, per_sample_probabilities, weighted_batches
from grouprobust.models import predict_logits
from grouprobust.params import POSITIVE, TRAIN_PARAMS, Interval, Param


# -- the distributions and the beta bounds (pure functions on a (classes x attributes) count table) --

def attribute_proportions(counts: np.ndarray) -> np.ndarray:
    """``alpha[y, a] = |X_ya| / |X_y|`` from a ``(n_classes, n_attrs)`` count table (rows of empty classes are 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _uniform_over_observed(counts: np.ndarray) -> np.ndarray:
    """``1 / A_y`` on the groups observed in class ``y`` (``A_y`` of them), 0 on empty groups."""
    observed = np.asarray(counts) > 0
    n_obs = observed.sum(axis=1, keepdims=True)
    return np.where(observed, 1.0 / np.maximum(n_obs, 1), 0.0)


def simulated_proportions(counts: np.ndarray, k: float) -> np.ndarray:
    """``p(a|y) = alpha_ya + k (1/A_y - alpha_ya)``, shape ``(n_classes, n_attrs)``.

    ``k = 0``: the biased batch; ``k = c``: the less-biased batch; ``k = c (beta + 1)``: GERNE's
    extrapolated objective in expectation (its effective per-group weights).
    """
    alpha = attribute_proportions(counts)
    return alpha + k * (_uniform_over_observed(counts) - alpha)


def beta_range(counts: np.ndarray, c: float) -> tuple[float, float]:
    """The admissible ``[beta_min, beta_max]`` for less-biased strength ``c`` (see the module docstring).

    ``beta_min = -1``; ``beta_max = min over over-represented groups of alpha / (c (alpha - 1/A_y)) - 1``,
    ``inf`` when no group is over-represented. Raises if ``c`` is outside ``(0, 1]``.
    """
    check_c(c)
    alpha = attribute_proportions(counts)
    excess = alpha - _uniform_over_observed(counts)
    over = excess > 1e-12
    if not over.any():
        return -1.0, math.inf
    k_max = float(np.min(alpha[over] / excess[over]))
    return -1.0, k_max / c - 1.0


def check_c(c: float) -> None:
    """Raise unless ``0 < c <= 1``."""
    if not 0.0 < c <= 1.0:
        raise GroupRobustError(f"gerne: c must lie in (0, 1], got {c}; use e.g. c=0.5", subject="hparam:c")


def check_beta(beta: float, counts: np.ndarray, c: float) -> tuple[float, float]:
    """The admissible range (see `beta_range`); raises a one-line error if ``beta`` lies outside it."""
    lo, hi = beta_range(counts, c)
    if not lo <= beta <= hi + 1e-9:
        raise GroupRobustError(
            f"gerne: beta={beta} is outside the admissible range [{lo:g}, {hi:.4g}] for c={c} on these training "
            f"groups (beyond it some group's effective weight is negative); pick beta in that range",
            subject="hparam:beta")
    return lo, hi


def adaptive_beta(gap: float, floor: float, ceiling: float, scale: float) -> float:
    """The adaptive extrapolation factor for relative loss gap ``gap = (L_lb - L_b) / L_lb`` (unitless):
    ``floor + (ceiling - floor) * clip(gap / scale, 0, 1)``, always in ``[floor, ceiling]`` (``floor``
    when the gap is not finite)."""
    if not math.isfinite(gap):
        return floor
    return floor + (ceiling - floor) * min(max(gap / scale, 0.0), 1.0)


def sample_probabilities(y: np.ndarray, a: np.ndarray, n_classes: int, n_attrs: int,
                         conditional: np.ndarray) -> torch.Tensor:
    """Per-sample draw probabilities: classes uniform, attribute ``a`` given ``y`` with ``conditional[y, a]``,
    uniform over the samples of a group (float64, sums to 1; empty classes get no mass)."""
    group_mass = (np.asarray(conditional, dtype=np.float64) / n_classes).ravel()
    return per_sample_probabilities(Grouper(n_classes, n_attrs).group_ids(y, a), group_mass)


def count_table(y: np.ndarray, a: np.ndarray, n_classes: int, n_attrs: int) -> np.ndarray:
    """Samples per (class, attribute), shape ``(n_classes, n_attrs)``."""
    return Grouper(n_classes, n_attrs).count_table(y, a)


# -- the method ---------------------------------------------------------------------------------------

BETA_SCHEDULES = ("fixed", "adaptive")
BETA_SIGNALS = ("train", "val")

GERNE_PARAMS: dict[str, Param] = {
    # With c <= 0.5 and beta <= 1, k = c (beta + 1) <= 1 <= alpha / (alpha - 1/A): every draw is admissible.
    "c": Param(0.5, ("choice", [0.25, 0.5]), "less-biased batch strength: p_lb(a|y) = alpha + c (1/A - alpha), 0 < c <= 1",
               Interval(0, 1, lo_open=True)),
    # The range [-1, beta_max] depends on the training groups: it is checked (and logged) when training starts.
    "beta": Param(1.0, ("uniform", -0.5, 1.0), "extrapolation factor in L_lb + beta (L_lb - L_b) (beta_schedule=adaptive: "
                                               "its ceiling); range [-1, beta_max] is computed from the training "
                                               "groups and logged"),
    "batch_size": Param(TRAIN_PARAMS["batch_size"].default, TRAIN_PARAMS["batch_size"].search,
                        "examples per step, split into a less-biased and a biased half", Interval(2, None)),
    "beta_schedule": Param("fixed", ("choice", list(BETA_SCHEDULES)),
                           "fixed: beta throughout; adaptive: beta moves in [beta_floor, beta] with the relative "
                           "gap (L_lb - L_b) / L_lb of the two half-batch losses"),
    "beta_floor": Param(0.0, None, "adaptive: the smallest beta (used while the two batches are fitted alike)",
                        Interval(-1, None)),
    "beta_gap_scale": Param(0.5, ("log_uniform", 0.1, 2.0), "adaptive: relative loss gap at which beta reaches "
                                                            "its ceiling beta", POSITIVE),
    "beta_signal": Param("train", ("choice", list(BETA_SIGNALS)),
                         "adaptive: the loss gap that drives beta: train (moving averages of the two half-batch "
                         "losses, every step) or val (the validation loss weighted as each batch, every epoch; "
                         "reads validation group labels, gerne only)"),
    "beta_ema": Param(0.9, None, "adaptive, beta_signal=train: moving-average momentum of the half-batch losses",
                      Interval(0, 1, hi_open=True)),
}


class _GERNEBase(Method):
    """GERNE's sampler and objective on whatever groups `_attributes` returns (true or pseudo)."""

    distributed: ClassVar[str] = "its per-group losses of each batch are not summed across processes yet"

    def __init__(self, hparams, data, loss_fn, generator):
        super().__init__(hparams, data, loss_fn, generator)
        self.c: float = hparams["c"]
        self.beta: float = hparams["beta"]
        self.half = self.batch_size // 2
        self._sums = torch.zeros(2, dtype=torch.float64, device=data.device)
        self._steps = 0
        self.adaptive = hparams["beta_schedule"] == "adaptive"
        #: adaptive schedule: [floor, ceiling] of beta, the loss moving averages and this epoch's betas
        self.ceiling: float = hparams["beta"]
        self.floor: float = hparams["beta_floor"]
        self._ema: tuple[float, float] | None = None
        self._epoch_betas: list[float] = []
        self.gap = math.nan

    def _attributes(self, context: MethodContext) -> tuple[np.ndarray, int]:
        """Per-sample attribute (true or pseudo) of the training set and the number of attribute values."""
        raise NotImplementedError

    def _validation_split(self, context: MethodContext):
        """The group-labelled validation split whose groups match the training groups (``beta_signal=val``)."""
        raise GroupRobustError(f"{self.name}: beta_signal=val needs validation groups that match the training "
                               "groups; use beta_signal=train", subject="hparam:beta_signal")

    def setup(self, context: MethodContext) -> None:
        a, n_attrs = self._attributes(context)
        y = self.data.dataset.y
        n_classes = self.data.n_classes
        self.attributes = np.asarray(a)
        self.counts = count_table(y, a, n_classes, n_attrs)
        self.range = check_beta(self.beta, self.counts, self.c)
        if self.adaptive:
            if self.floor > self.ceiling:
                raise GroupRobustError(f"gerne: beta_floor={self.floor} is above the adaptive ceiling beta={self.ceiling}; "
                                       "pick beta_floor <= beta", subject="hparam:beta_floor")
            self.beta = self.floor
            if self.hparams["beta_signal"] == "val":
                self._val, self._device = self._validation_split(context), context.device
        self.p_b = sample_probabilities(y, a, n_classes, n_attrs, simulated_proportions(self.counts, 0.0))
        self.p_lb = sample_probabilities(y, a, n_classes, n_attrs, simulated_proportions(self.counts, self.c))

    def batches(self) -> Iterator[torch.Tensor]:
        """One epoch (``ceil(n / batch_size)`` steps) of ``[less-biased half | biased half]`` index tensors."""
        n_batches = batches_per_epoch(self.data.n, self.batch_size)
        lb = weighted_batches(self.p_lb, self.half, n_batches, self.generator)
        b = weighted_batches(self.p_b, self.half, n_batches, self.generator)
        return (torch.cat(pair) for pair in zip(lb, b))

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """``L_lb + beta (L_lb - L_b)`` from one forward pass over both halves."""
        per_example = self.loss_fn(model(batch.x), batch.y)
        loss_lb, loss_b = per_example[:self.half].mean(), per_example[self.half:].mean()
        pair = torch.stack([loss_lb.detach(), loss_b.detach()]).double()
        self._sums += pair  # stays on the device: no per-step host sync (the adaptive train signal reads it back)
        self._steps += 1
        objective = loss_lb + self.beta * (loss_lb - loss_b)
        if self.adaptive:
            self._epoch_betas.append(self.beta)
            if self.hparams["beta_signal"] == "train":
                self._adapt(float(pair[0]), float(pair[1]))
        return objective

    def end_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """``beta_signal=val``: set the next epoch's beta from the validation loss gap."""
        if self.adaptive and self.hparams["beta_signal"] == "val":
            self._adapt(*self._validation_losses(model))

    def _validation_losses(self, model: torch.nn.Module) -> tuple[float, float]:
        """``(L_lb, L_b)`` on the validation split: its per-group mean losses weighted by the less-biased and
        the biased batch distributions (classes uniform; groups absent from validation are skipped)."""
        val = self._val
        logits = predict_logits(model, val.x, self._device)
        per_example = self.loss_fn(logits, torch.as_tensor(val.y)).double().numpy()
        n_classes, n_attrs = self.counts.shape
        sums = np.bincount(val.g, weights=per_example, minlength=n_classes * n_attrs).reshape(n_classes, n_attrs)
        sizes = np.bincount(val.g, minlength=n_classes * n_attrs).reshape(n_classes, n_attrs)
        group_loss = np.divide(sums, sizes, out=np.zeros_like(sums), where=sizes > 0)

        def weighted(conditional: np.ndarray) -> float:
            w = np.where(sizes > 0, conditional, 0.0)
            w = np.divide(w, w.sum(axis=1, keepdims=True), out=np.zeros_like(w), where=w.sum(axis=1, keepdims=True) > 0)
            return float((w * group_loss).sum() / max(int((w.sum(axis=1) > 0).sum()), 1))

        return (weighted(simulated_proportions(self.counts, self.c)), weighted(simulated_proportions(self.counts, 0.0)))

    def _adapt(self, loss_lb: float, loss_b: float) -> None:
        """Update the loss moving averages and set the next step's beta (`adaptive_beta`)."""
        # the val signal is a full pass over validation once an epoch: not noisy, so not smoothed
        m = self.hparams["beta_ema"] if self.hparams["beta_signal"] == "train" else 0.0
        if self._ema is None:
            self._ema = (loss_lb, loss_b)
        else:
            self._ema = (m * self._ema[0] + (1 - m) * loss_lb, m * self._ema[1] + (1 - m) * loss_b)
        ema_lb, ema_b = self._ema
        gap = (ema_lb - ema_b) / ema_lb if ema_lb > 0 else math.nan
        self.gap = gap
        self.beta = adaptive_beta(gap, self.floor, self.ceiling, self.hparams["beta_gap_scale"])

    def _range_info(self) -> dict[str, Any]:
        lo, hi = self.range
        info = {"c": self.c, "beta": self.beta, "beta_min": lo, "beta_max": None if math.isinf(hi) else hi,
                "c_beta_plus_1": self.c * (self.beta + 1), "beta_schedule": self.hparams["beta_schedule"]}
        if self.adaptive:
            info.update(beta_floor=self.floor, beta_ceiling=self.ceiling)
        return info

    def epoch_log(self) -> dict[str, Any]:
        means = (self._sums / max(self._steps, 1)).tolist()
        self._sums.zero_()
        self._steps = 0
        line = {**self._range_info(), "loss_lb": means[0], "loss_b": means[1]}
        if self.adaptive and self._epoch_betas:
            betas = self._epoch_betas
            # "beta" is the value the next step will use; these describe the steps of this epoch
            line.update(beta_epoch_mean=float(np.mean(betas)), beta_epoch_min=min(betas), beta_epoch_max=max(betas),
                        loss_gap=self.gap if math.isfinite(self.gap) else None)
            self._epoch_betas = []
        return {"gerne": line}

    def state_dict(self) -> dict[str, Any]:
        # the adaptive schedule (beta, its loss moving averages and gap) and this epoch's logged sums
        return {**super().state_dict(), "beta": self.beta, "ema": self._ema, "gap": self.gap, "sums": self._sums,
                "steps": self._steps, "epoch_betas": list(self._epoch_betas)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.beta, self._ema, self.gap = state["beta"], state["ema"], state["gap"]
        self._sums.copy_(state["sums"])
        self._steps, self._epoch_betas = state["steps"], list(state["epoch_betas"])

    def run_info(self) -> dict[str, Any]:
        k = self.c * (self.beta + 1)
        return {**self._range_info(), "group_counts": self.counts.tolist(),
                "p_ext": [to_list(row) for row in simulated_proportions(self.counts, k)]}


@register_method
class GERNE(_GERNEBase):
    name = "gerne"
    needs = "full"
    summary = "GERNE: extrapolate the loss from a biased to a less-biased batch, L_lb + beta (L_lb - L_b) (known attributes)"
    params = GERNE_PARAMS

    def _attributes(self, context: MethodContext) -> tuple[np.ndarray, int]:
        dataset = self.data.dataset
        if dataset.a is None:
            raise GroupRobustError("gerne needs training attributes; use the label regime 'full', or gerne-pseudo "
                                   "without them", subject="regime")
        if not dataset.grouper.is_cross(dataset.g, dataset.y, dataset.a):
            raise GroupRobustError("gerne needs groups of the form y * n_attrs + a; this dataset defines its own "
                                   "groups, so use gerne-pseudo")
        return dataset.a, dataset.n_attrs

    def _validation_split(self, context: MethodContext):
        val = context.validation
        if val.g is None or val.a is None or val.n_attrs != self.counts.shape[1]:
            return super()._validation_split(context)
        return val


# -- unknown attributes ---------------------------------------------------------------------------------

def pseudo_attributes(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """0 (bias-aligned) where the confidence on the true label exceeds ``threshold``, else 1 (bias-conflicting)."""
    return (np.asarray(confidence) <= threshold).astype(np.int64)


def true_conflicting(y: np.ndarray, a: np.ndarray, n_classes: int, n_attrs: int) -> np.ndarray:
    """Whether each sample's attribute differs from its class's most frequent attribute (true bias-conflicting)."""
    majority = count_table(y, a, n_classes, n_attrs).argmax(axis=1)
    return np.asarray(a) != majority[np.asarray(y)]


def pseudo_attribute_report(pseudo: np.ndarray, full: GroupDataset) -> dict[str, Any]:
    """`pseudo_attribute_quality` of ``pseudo`` against the true bias-conflicting samples of ``full`` (the
    training split with its true attributes); empty when it has none. Reporting only."""
    if full.a is None:
        return {}
    return pseudo_attribute_quality(pseudo, true_conflicting(full.y, full.a, full.n_classes, full.n_attrs))


def pseudo_attribute_quality(pseudo: np.ndarray, conflicting: np.ndarray) -> dict[str, Any]:
    """Precision and recall of pseudo bias-conflicting (``pseudo == 1``) against the true ones (fractions,
    None when undefined), with the counts."""
    flagged, truth = np.asarray(pseudo) == 1, np.asarray(conflicting, dtype=bool)
    hits = int((flagged & truth).sum())
    return {"precision": hits / int(flagged.sum()) if flagged.any() else None,
            "recall": hits / int(truth.sum()) if truth.any() else None,
            "n_pseudo_conflicting": int(flagged.sum()), "n_true_conflicting": int(truth.sum())}


@register_method
class GERNEPseudo(_GERNEBase):
    name = "gerne-pseudo"
    needs = "val"
    summary = ("GERNE with pseudo-attributes: an ERM model's confidence on the true label splits each class into "
               "bias-aligned and bias-conflicting (unknown training attributes)")
    params = {
        **GERNE_PARAMS,
        "threshold": Param(0.9, ("choice", [0.5, 0.8, 0.9, 0.95, 0.99]),
                           "pseudo bias-aligned if the ERM model's softmax confidence on the true label exceeds this",
                           Interval(0, 1)),
        "erm_epochs": Param(0, None, "epochs of the first-stage ERM model (0: the run's epochs)", Interval(0, None)),
        "erm_run": Param("", None, "run directory whose model.pt gives the ERM model (same dataset, data and seed); "
                                   "empty: train it in this run"),
    }

    def _attributes(self, context: MethodContext) -> tuple[np.ndarray, int]:
        if self.hparams["erm_run"]:
            reference = context.load_reference_model(self.hparams["erm_run"], "erm_run")
        else:
            epochs = self.hparams["erm_epochs"] or self.hparams["epochs"]
            reference = context.train_stage1(self.data, epochs, "gerne-pseudo ERM stage")
        logits = predict_logits(reference, self.data.dataset.x, context.device)
        y = torch.as_tensor(self.data.dataset.y)
        confidence = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1).numpy()
        pseudo = pseudo_attributes(confidence, self.hparams["threshold"])
        self.pseudo_info: dict[str, Any] = {"threshold": self.hparams["threshold"],
                                            "n_pseudo_conflicting": int(pseudo.sum()),
                                            **context.true_group_report(pseudo_attribute_report, pseudo)}
        return pseudo, 2

    def epoch_log(self) -> dict[str, Any]:
        return {**super().epoch_log(), "pseudo_attributes": self.pseudo_info}

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "pseudo_attributes": self.pseudo_info}
