"""Per-example losses, selected by the ``loss`` hyper-parameter.

Each loss is registered with its own hyper-parameters; a factory receives the resolved
hyper-parameters and the training class counts (for prior-based losses) and returns
``fn(logits, y) -> per-example loss tensor``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from grouprobust.errors import GroupRobustError
from grouprobust.params import NON_NEGATIVE, POSITIVE, Param

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: a factory ``(hparams, class_counts) -> LossFn`` and its parameters."""

    name: str
    factory: Callable[[dict, np.ndarray], LossFn]
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, description: str, params: dict[str, Param] | None = None) -> Callable:
    """Decorator registering a loss factory under ``name``."""

    def wrap(factory: Callable[[dict, np.ndarray], LossFn]) -> Callable:
        LOSSES[name] = LossSpec(name, factory, dict(params or {}), description)
        return factory

    return wrap


def get_loss(name: str) -> LossSpec:
    """The loss registered as ``name``; a one-line error lists the known ones."""
    if name not in LOSSES:
        raise GroupRobustError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}",
                               subject="hparam:loss")
    return LOSSES[name]


def list_losses() -> list[LossSpec]:
    """Every registered loss, sorted by name."""
    return [LOSSES[k] for k in sorted(LOSSES)]


def make_loss(hparams: dict, class_counts: np.ndarray) -> LossFn:
    """The per-example loss function named by ``hparams['loss']``."""
    return get_loss(hparams["loss"]).factory(hparams, np.asarray(class_counts))


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
