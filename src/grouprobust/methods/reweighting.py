"""Static generalized reweighting: importance weighting (weights) and resampling (sampler).

Both give every group (or every class, with ``balance=class``) the same total mass; importance
weighting does it in the objective, resampling in which examples are drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from grouprobust.errors import GroupRobustError
from grouprobust.losses import LossFn
from grouprobust.methods.base import Batch, Method, TrainData
from grouprobust.methods.registry import register_method
from grouprobust.methods.sampling import balanced_probabilities, batches_per_epoch
from grouprobust.params import Param

BALANCE = ("group", "class")
_BALANCE_PARAM = Param("group", ("choice", list(BALANCE)), "give equal mass to every group, or to every class")


def inverse_frequency_weights(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Per-sample weights ``n / (k * n_label)`` (``k`` = number of non-empty labels): every non-empty
    label gets the same total weight and the weights average 1 over the samples."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_labels).astype(np.float64)
    k = int((counts > 0).sum())
    return len(labels) / (k * counts[labels])


def balance_labels(data: TrainData, balance: str) -> tuple[np.ndarray, int]:
    """The labels to balance (``group`` ids or ``class`` labels) of the training split, and their number."""
    if balance == "class":
        return data.dataset.y, data.n_classes
    if data.dataset.g is None:
        raise GroupRobustError("balance=group needs training group labels; use the label regime 'full' or "
                               "balance=class", subject="hparam:balance")
    return data.dataset.g, data.n_groups


@register_method
class ImportanceWeighting(Method):
    """ERM's shuffled batches, each example's loss multiplied by its inverse group (or class) frequency."""

    name = "iw"
    needs = "full"
    summary = "importance weighting: per-example loss x inverse group frequency (balance=class: inverse class frequency)"
    same_as = "SubpopBench ReWeight"
    params = {"balance": _BALANCE_PARAM}
    distributed = ""

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        labels, n_labels = balance_labels(data, hparams["balance"])
        #: Weight of every training example (mean 1), on the device.
        self.weights = torch.as_tensor(inverse_frequency_weights(labels, n_labels), dtype=torch.float32,
                                       device=data.device)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return (self.weights[batch.idx] * self.loss_fn(model(batch.x), batch.y)).mean()


class WeightedSampling(Method):
    """A method whose epochs are ``ceil(n / batch_size)`` batches drawn with replacement from
    ``sample_probs`` (per-example probabilities, CPU); ERM's shuffle while ``sample_probs`` is None.
    Subclasses set ``sample_probs`` in their constructor."""

    sample_probs: torch.Tensor | None = None

    def epoch_order(self) -> torch.Tensor:
        if self.sample_probs is None:
            return super().epoch_order()
        n_batches = batches_per_epoch(self.data.n, self.batch_size)
        # One draw for the whole epoch: a draw per batch would rebuild the O(n) table every step.
        draws = torch.multinomial(self.sample_probs, n_batches * self.batch_size, replacement=True,
                                  generator=self.generator)
        return draws.to(self.data.index_device)


@register_method
class Resample(WeightedSampling):
    """Minibatches drawn with replacement so that every group (or class) is equally likely; plain mean loss.

    Reusable: a subclass changes `sample_probs` and keeps the sampler.
    """

    name = "resample"
    needs = "full"
    summary = "group-balanced resampling (balance=class: class-balanced); GERNE's resampling baseline"
    same_as = "SubpopBench ReSample"
    params = {"balance": _BALANCE_PARAM}
    distributed = ""

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        labels, n_labels = balance_labels(data, hparams["balance"])
        self.sample_probs = balanced_probabilities(labels, n_labels)
