"""Mixup on group-balanced batches (SubpopBench's ``Mixup``) and LISA's selective mixup (Yao et al. 2022).

Both mix inputs ``x~ = lam x_i + (1 - lam) x_j`` with ``lam ~ Beta(alpha, alpha)`` (one draw per
batch for Mixup, one per example for LISA, as SubpopBench) and train on ``lam L(f(x~), y_i) + (1 - lam) L(f(x~), y_j)``; they differ in the partner ``j``.
Texts (token ids) cannot be interpolated: for them the backbone's features, the head's input, are
mixed instead (mixup at the penultimate layer).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from grouprobust.losses import LossFn
from grouprobust.methods.base import Batch, TrainData
from grouprobust.methods.environments import ENV_PARAMS, EnvironmentMethod
from grouprobust.methods.registry import register_method
from grouprobust.params import FRACTION, POSITIVE, Param


def lisa_partners(y: torch.Tensor, a: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """For every example ``i``, a partner index drawn uniformly among the batch examples that
    ``mode="intra-label"``: share its label and have another attribute, or ``mode="intra-domain"``:
    share its attribute and have another label. An example with no such partner is its own partner
    (mixing it changes nothing). Returns a long tensor on ``y``'s device."""
    same_y, same_a = y[:, None] == y[None, :], a[:, None] == a[None, :]
    allowed = same_y & ~same_a if mode == "intra-label" else same_a & ~same_y
    scores = torch.rand(allowed.shape, generator=generator).to(y.device)
    scores = torch.where(allowed, scores, torch.full_like(scores, -1.0))
    best = scores.argmax(dim=1)
    return torch.where(allowed.any(dim=1), best, torch.arange(len(y), device=y.device))


class _Mixing(EnvironmentMethod):
    """Mixed inputs and the mixed loss; subclasses choose `partners`."""

    distributed: ClassVar[str] = "it pairs examples within the batch, which processes split"

    alpha_name = "mix_alpha"

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        # Beta draws need numpy; its generator is seeded from the run's torch generator (deterministic).
        self.rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator)))

    def partners(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]

    #: One mixing weight per batch (Mixup), or one per example (LISA).
    per_example_lam = False

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        alpha = self.hparams[self.alpha_name]
        n = len(batch.y) if self.per_example_lam else 1
        lam = torch.as_tensor(self.rng.beta(alpha, alpha, size=n), dtype=batch.x.dtype, device=batch.x.device)
        j = self.partners(batch)
        if batch.x.is_floating_point():
            lam_x = lam.reshape(-1, *([1] * (batch.x.dim() - 1)))
            logits = model(lam_x * batch.x + (1.0 - lam_x) * batch.x[j])
        else:  # token ids cannot be interpolated: mix the backbone's features (the head's input) instead
            features = model.features(batch.x)
            lam_f = lam.to(features.dtype).reshape(-1, 1)
            logits = model.head(lam_f * features + (1.0 - lam_f) * features[j])
        return (lam * self.loss_fn(logits, batch.y) + (1.0 - lam) * self.loss_fn(logits, batch.y[j])).mean()


@register_method
class Mixup(_Mixing):
    """Mixup (Zhang et al. 2018) on environment-balanced batches: every example is mixed with a
    random other example of the batch (a seeded permutation)."""

    name = "mixup"
    needs = "full"
    same_as = "SubpopBench Mixup (on group-balanced batches)"
    summary = "mixup: inputs and labels mixed with lam ~ Beta(alpha, alpha) within group-balanced batches"
    params = {**ENV_PARAMS, "mix_alpha": Param(0.2, ("log_uniform", 0.1, 10.0), "Beta(alpha, alpha) of the mixing "
                                               "weight lam", POSITIVE)}

    def partners(self, batch: Batch) -> torch.Tensor:
        return torch.randperm(len(batch.y), generator=self.generator).to(batch.y.device)


@register_method
class LISA(_Mixing):
    """LISA: each batch is mixed intra-label (same label, other attribute; probability ``mix_ratio``)
    or intra-domain (same attribute, other label), so that mixing cancels the spurious attribute's
    link to the label. The attribute is the spurious attribute of the (class, attribute) groups.
    Each example draws its own ``lam``. SubpopBench pairs two random attributes per class (or two
    labels per attribute) and mixes those blocks; here every example draws its partner among all
    valid ones in the batch."""

    per_example_lam = True

    name = "lisa"
    needs = "full"
    same_as = "SubpopBench LISA"
    summary = "LISA: selective mixup of pairs with the same label (other attribute) or same attribute (other label)"
    params = {**ENV_PARAMS,
              "mix_alpha": Param(2.0, ("log_uniform", 0.1, 10.0), "Beta(alpha, alpha) of the mixing weight lam",
                                 POSITIVE),
              "mix_ratio": Param(0.5, ("uniform", 0.0, 1.0), "probability that a batch is mixed intra-label "
                                 "(else intra-domain)", FRACTION)}

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        attrs = data.dataset.grouper.attr_of(data.dataset.g)
        #: Spurious attribute of every training example, on the device.
        self.attr = torch.as_tensor(attrs, dtype=torch.long, device=data.device)

    def partners(self, batch: Batch) -> torch.Tensor:
        mode = "intra-label" if self.rng.random() < self.hparams["mix_ratio"] else "intra-domain"
        return lisa_partners(batch.y, self.attr[batch.idx], mode, self.generator)
