"""Per-example losses, selected by the ``loss`` hyper-parameter.

Each loss is registered with its own hyper-parameters; a factory receives the resolved
hyper-parameters and the training class counts (for prior-based losses) and returns
``fn(logits, y) -> per-example loss tensor``.

Every loss also takes the per-class reweightings of `CLASS_WEIGHT_PARAMS` (``class_weights`` =
none | sqrt | cb | drw): the per-example loss is multiplied by the weight of its class, so any
method (and any loss) can use them. A loss whose value depends on the epoch (deferred
re-weighting) has an ``on_epoch(epoch)`` method that `Trainer.run_epochs` calls before each epoch
(epochs count from 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from grouprobust.errors import GroupRobustError
from grouprobust.params import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Choice, Interval, Param
from grouprobust.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: a factory ``(hparams, class_counts) -> LossFn`` and its parameters."""

    name: str
    factory: Callable[[dict, np.ndarray], LossFn]
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""


#: Every loss by name (registered by `register_loss` below).
LOSSES: Registry[LossSpec] = Registry("loss", subject="hparam:loss")


CLASS_WEIGHTS = ("none", "sqrt", "cb", "drw")

#: Per-class reweighting every loss takes (declared once, added to each registered loss's parameters).
#: Not searched by default, so that a random search without a parameter list draws what it drew before.
CLASS_WEIGHT_PARAMS: dict[str, Param] = {
    "class_weights": Param("none", None,
                           "per-class weights on the loss: none; sqrt: n_c^-1/2; cb: class-balanced (1 - cb_beta) / "
                           "(1 - cb_beta^n_c) (Cui et al.); drw: cb weights deferred until after drw_start epochs "
                           "(Cao et al.); normalised to sum to the number of non-empty classes", Choice(CLASS_WEIGHTS)),
    "cb_beta": Param(0.9999, None,
                     "cb / drw: effective-number parameter beta (0: no reweighting, -> 1: inverse class frequency)",
                     Interval(0, 1, hi_open=True)),
    "drw_start": Param(5, None, "drw: epochs trained with unit weights before the class-balanced weights switch on",
                       AT_LEAST_ONE),
}


def register_loss(name: str, description: str, params: dict[str, Param] | None = None) -> Callable:
    """Decorator registering a loss factory under ``name``; the registered factory applies the
    ``class_weights`` reweighting (`CLASS_WEIGHT_PARAMS`) on top of the loss."""

    def wrap(factory: Callable[[dict, np.ndarray], LossFn]) -> Callable:
        def weighted_factory(hparams: dict, class_counts: np.ndarray) -> LossFn:
            return with_class_weights(factory(hparams, class_counts), hparams, class_counts)

        LOSSES.add(name, LossSpec(name, weighted_factory, {**dict(params or {}), **CLASS_WEIGHT_PARAMS}, description))
        return factory

    return wrap


def get_loss(name: str) -> LossSpec:
    """The loss registered as ``name``; a one-line error lists the known ones."""
    return LOSSES.get_entry(name)


def list_losses() -> list[LossSpec]:
    """Every registered loss, sorted by name."""
    return [LOSSES[k] for k in sorted(LOSSES)]


def make_loss(hparams: dict, class_counts: np.ndarray) -> LossFn:
    """The per-example loss function named by ``hparams['loss']``."""
    return get_loss(hparams["loss"]).factory(hparams, np.asarray(class_counts))


# -- per-class reweighting ---------------------------------------------------------------------------

def _normalised(raw: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``raw`` on the non-empty classes scaled to sum to their number (Cui et al.'s normalisation); 0 on empty ones."""
    present = counts > 0
    w = np.where(present, raw, 0.0)
    return w * (present.sum() / w.sum())


def sqrt_class_weights(class_counts: np.ndarray) -> np.ndarray:
    """Square-root reweighting ``w_c ∝ n_c^(-1/2)``, normalised to sum to the number of non-empty classes."""
    counts = np.asarray(class_counts, dtype=np.float64)
    return _normalised(1.0 / np.sqrt(np.maximum(counts, 1.0)), counts)


def class_balanced_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
    """Class-balanced weights ``w_c ∝ (1 - beta) / (1 - beta^n_c)`` (inverse effective number of samples,
    Cui et al. 2019), normalised to sum to the number of non-empty classes."""
    counts = np.asarray(class_counts, dtype=np.float64)
    effective = -np.expm1(np.maximum(counts, 1.0) * np.log(beta)) if beta > 0 else np.ones_like(counts)
    return _normalised((1.0 - beta) / effective, counts)


def class_weight_vector(hparams: dict, class_counts: np.ndarray) -> np.ndarray | None:
    """The per-class weights that ``class_weights`` names once they are on (``None`` for ``none``)."""
    kind = hparams.get("class_weights", "none")
    if kind == "none":
        return None
    if kind == "sqrt":
        return sqrt_class_weights(class_counts)
    if kind in ("cb", "drw"):
        return class_balanced_weights(class_counts, hparams["cb_beta"])
    raise GroupRobustError(f"unknown class_weights {kind!r}; choose one of: {', '.join(CLASS_WEIGHTS)}",
                           subject="hparam:class_weights")


class ClassWeightedLoss:
    """``base(logits, y) * w[y]``; with deferred re-weighting (``defer_until``) the weights are 1 until
    `on_epoch` is told an epoch after ``defer_until`` has begun."""

    def __init__(self, base: LossFn, weights: np.ndarray, defer_until: int = 0):
        self.base = base
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.defer_until = defer_until
        self.active = defer_until == 0

    def on_epoch(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (from 1): the weights are on from epoch ``defer_until + 1``."""
        self.active = epoch > self.defer_until

    def current_weights(self) -> np.ndarray:
        """The per-class weights applied now (ones while deferred)."""
        return self.weights.numpy() if self.active else np.ones(len(self.weights))

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        values = self.base(logits, y)
        if not self.active:
            return values
        return values * self.weights.to(device=values.device, dtype=values.dtype)[y]


def with_class_weights(base: LossFn, hparams: dict, class_counts: np.ndarray) -> LossFn:
    """``base`` with the ``class_weights`` reweighting of ``hparams`` (``base`` itself for ``none``)."""
    weights = class_weight_vector(hparams, class_counts)
    if weights is None:
        return base
    return ClassWeightedLoss(base, weights, hparams["drw_start"] if hparams["class_weights"] == "drw" else 0)


# -- the losses --------------------------------------------------------------------------------------

@register_loss("ce", "cross-entropy")
def _cross_entropy(hparams: dict, class_counts: np.ndarray) -> LossFn:
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    return ce


def class_log_priors(class_counts: np.ndarray) -> torch.Tensor:
    """log of the training class frequencies, shape ``(n_classes,)``; an empty class counts as one
    sample so that its log prior stays finite."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    return torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float64)


@register_loss("squared", "squared error between the logits and the one-hot label, summed over classes")
def _squared(hparams: dict, class_counts: np.ndarray) -> LossFn:
    def squared(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits - target).pow(2).sum(dim=1)

    return squared


LA_FORMS = ("additive", "multiplicative", "vs")


@register_loss(
    "logit-adjusted",
    "cross-entropy on adjusted logits Delta_k z_k + tau log pi_k: additive (Menon et al. LA), "
    "multiplicative (Ye et al. CDT) or both (Kini et al. VS); predictions use the raw logits",
    params={
        "la_form": Param("additive", ("choice", list(LA_FORMS)),
                         "additive: z + tau log pi; multiplicative (CDT): z * (n_k/n_max)^gamma; vs: both"),
        "la_tau": Param(1.0, ("uniform", 0.0, 2.0), "additive adjustment scale tau (Menon et al. use 1)"),
        "la_gamma": Param(0.2, ("uniform", 0.0, 0.5), "multiplicative exponent gamma: Delta_k = (n_k / n_max)^gamma",
                          NON_NEGATIVE),
    },
)
def _logit_adjusted(hparams: dict, class_counts: np.ndarray) -> LossFn:
    form = hparams["la_form"]
    log_prior = class_log_priors(class_counts)
    additive = hparams["la_tau"] * log_prior if form in ("additive", "vs") else torch.zeros_like(log_prior)
    # Delta_k = (n_k / n_max)^gamma = exp(gamma * (log pi_k - max log pi)).
    gamma = hparams["la_gamma"] if form in ("multiplicative", "vs") else 0.0
    scale = torch.exp(gamma * (log_prior - log_prior.max()))

    def logit_adjusted(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adjusted = logits * scale.to(logits) + additive.to(logits)
        return F.cross_entropy(adjusted, y, reduction="none")

    return logit_adjusted


def multiclass_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margin ``z_y - logsumexp_{k != y} z_k`` per example; for two classes this is ``y * f(x)`` with
    ``f = z_1 - z_0`` and ``y`` in {-1, +1}, and ``log(1 + exp(-margin))`` is exactly the cross-entropy."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


@register_loss(
    "poly-tailed",
    "polynomially-tailed loss of Wang et al. (2022) on the margin: shifted logistic below beta, "
    "1 / (margin - beta + 1)^alpha above (the fix the GRW paper proposes)",
    params={
        "poly_alpha": Param(1.0, ("uniform", 0.5, 3.0), "tail exponent alpha: the loss decays like margin^-alpha",
                            POSITIVE),
        "poly_beta": Param(0.0, ("uniform", -1.0, 2.0), "margin beta where the logistic part meets the polynomial tail"),
    },
)
def _poly_tailed(hparams: dict, class_counts: np.ndarray) -> LossFn:
    alpha, beta = hparams["poly_alpha"], hparams["poly_beta"]
    # Shift of the logistic part so that both pieces equal 1 at margin = beta (continuity).
    shift = 1.0 - float(np.logaddexp(0.0, -beta))

    def poly_tailed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        margin = multiclass_margin(logits, y)
        left = F.softplus(-margin) + shift
        # Clamp inside each branch so the unused one never produces inf/NaN gradients.
        right = (margin.clamp_min(beta) - beta + 1.0).pow(-alpha)
        return torch.where(margin < beta, left, right)

    return poly_tailed


@register_loss(
    "focal",
    "focal loss -(1 - p_y)^gamma log p_y (Lin et al.); gamma = 0 is cross-entropy",
    params={"focal_gamma": Param(1.0, ("uniform", 0.0, 3.0), "focusing exponent gamma (0: cross-entropy)",
                                 NON_NEGATIVE)},
)
def _focal(hparams: dict, class_counts: np.ndarray) -> LossFn:
    gamma = hparams["focal_gamma"]

    def focal(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        if gamma == 0:
            return -logp
        # (1 - p)^gamma through -expm1(logp): exact for p near 1, where 1 - exp(logp) loses digits
        return -(-torch.expm1(logp)).clamp_min(0).pow(gamma) * logp

    return focal


def ldam_margins(class_counts: np.ndarray, max_m: float) -> torch.Tensor:
    """LDAM margins ``m_c ∝ n_c^(-1/4)`` scaled so that the largest is ``max_m`` (empty classes count as one
    sample), float64 ``(n_classes,)``."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    m = counts ** -0.25
    return torch.as_tensor(m * (max_m / m.max()), dtype=torch.float64)


@register_loss(
    "ldam",
    "label-distribution-aware margin loss (Cao et al.): cross-entropy on s * (z - m_y e_y), margins m_c ∝ n_c^-1/4; "
    "with class_weights=drw it is LDAM-DRW",
    params={
        "ldam_max_m": Param(0.5, ("choice", [0.1, 0.3, 0.5, 1.0]), "largest margin (that of the smallest class)",
                            POSITIVE),
        "ldam_s": Param(30.0, ("choice", [1.0, 10.0, 30.0]), "logit scale s (LDAM's code uses 30 on normalised "
                                                             "features; 1 leaves the logits as they are)", POSITIVE),
    },
)
def _ldam(hparams: dict, class_counts: np.ndarray) -> LossFn:
    margins, scale = ldam_margins(class_counts, hparams["ldam_max_m"]), hparams["ldam_s"]

    def ldam(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shifted = logits - F.one_hot(y, logits.shape[1]).to(logits.dtype) * margins.to(logits)[y][:, None]
        return F.cross_entropy(scale * shifted, y, reduction="none")

    return ldam


@register_loss("balanced-softmax",
               "balanced softmax (Ren et al.): cross-entropy on z + log pi (training class priors); predictions use "
               "the raw logits (logit-adjusted with tau = 1, additive)")
def _balanced_softmax(hparams: dict, class_counts: np.ndarray) -> LossFn:
    log_prior = class_log_priors(class_counts)

    def balanced_softmax(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + log_prior.to(logits), y, reduction="none")

    return balanced_softmax
