"""Per-example losses selectable with ``--set loss=NAME``.

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
from grouprobust.hparams import Param

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
        raise GroupRobustError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))} (--set loss=NAME)")
    return LOSSES[name]


def make_loss(hparams: dict, class_counts: np.ndarray) -> LossFn:
    """The per-example loss function named by ``hparams['loss']``."""
    return get_loss(hparams["loss"]).factory(hparams, np.asarray(class_counts))


@register_loss("ce", "cross-entropy")
def _cross_entropy(hparams: dict, class_counts: np.ndarray) -> LossFn:
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    return ce
