"""Shared pieces of the methods that compare environments (IRM, VREx, MMD, CORAL, Mixup, LISA).

An *environment* is a training group (``env=group``) or a value of the spurious attribute
(``env=attribute``). Batches are drawn environment-balanced by default (``sampler=balanced``):
DomainBed gives these methods one equal-sized minibatch per environment, which is what a balanced
draw does in expectation; ``sampler=shuffle`` keeps ERM's shuffled batches.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from grouprobust.errors import GroupRobustError
from grouprobust.losses import LossFn
from grouprobust.methods.base import Batch, TrainData, last_values
from grouprobust.methods.reweighting import WeightedSampling
from grouprobust.methods.sampling import balanced_probabilities
from grouprobust.params import NON_NEGATIVE, Interval, Param


def env_params(default_env: str = "group", env_help: str = "") -> dict[str, Param]:
    """``env`` (with ``default_env``) and ``sampler``: the parameters every environment method takes."""
    return {
        "env": Param(default_env, ("choice", ["group", "attribute"]),
                     env_help or "environments: the training groups, or the values of the spurious attribute"),
        "sampler": Param("balanced", ("choice", ["balanced", "shuffle"]),
                         "environment-balanced draws with replacement, or ERM's shuffled batches"),
    }


ENV_PARAMS: dict[str, Param] = env_params()


def penalty_params(prefix: str, weight: float, weight_search: tuple, anneal: int) -> dict[str, Param]:
    """``<prefix>_lambda`` and ``<prefix>_anneal_iters``: the penalty weight is 1 for the first
    ``anneal_iters`` steps, then ``lambda`` (DomainBed's schedule for IRM and VREx)."""
    return {
        f"{prefix}_lambda": Param(weight, weight_search, "penalty weight after the annealing steps", NON_NEGATIVE),
        f"{prefix}_anneal_iters": Param(anneal, ("int", 0, 1000),
                                        "steps with penalty weight 1 before the weight becomes lambda",
                                        Interval(0)),
    }


def annealed_weight(step: int, anneal_iters: int, weight: float) -> float:
    """Penalty weight at 0-based ``step``: 1.0 while ``step < anneal_iters``, then ``weight``."""
    return 1.0 if step < anneal_iters else weight


def environment_risks(losses: torch.Tensor, env: torch.Tensor, n_envs: int) -> torch.Tensor:
    """Mean loss of every environment present in the batch (absent ones are left out), shape ``(k,)``."""
    sums = torch.zeros(n_envs, dtype=losses.dtype, device=losses.device).index_add(0, env, losses)
    counts = torch.bincount(env, minlength=n_envs)
    present = counts > 0
    return sums[present] / counts[present].to(losses.dtype)


class EnvironmentMethod(WeightedSampling):
    """Base of the environment methods: reads the training groups, keeps every example's environment
    on the device (``self.env``) and draws environment-balanced batches unless ``sampler=shuffle``.
    Subclasses add ``ENV_PARAMS`` to their ``params``."""

    distributed: ClassVar[str] = ("its penalty compares per-environment statistics of the batch, not shared across "
                                  "processes yet")

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        super().__init__(hparams, data, loss_fn, generator)
        dataset = data.dataset
        if dataset.g is None:
            raise GroupRobustError(f"{self.name} needs training group labels; use the label regime 'full'",
                                   subject="regime")
        if hparams["env"] == "attribute":
            if dataset.a is None:
                raise GroupRobustError(f"{self.name}: env=attribute needs the training attributes, which this "
                                       "dataset does not carry; use env=group", subject="hparam:env")
            labels, self.n_envs = dataset.a, dataset.n_attrs
        else:
            labels, self.n_envs = dataset.g, data.n_groups
        #: Environment of every training example, on the device.
        self.env = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=data.device)
        if hparams["sampler"] == "balanced":
            self.sample_probs = balanced_probabilities(labels, self.n_envs)
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        # ``_last``: the last step's logged figures (a subclass's), read by the epoch's history line
        return {**super().state_dict(), "steps": self.steps, "last": getattr(self, "_last", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = state["steps"]
        if state["last"] is not None:
            self._last = state["last"]

    def batch_env(self, batch: Batch) -> torch.Tensor:
        """The environment of every example of ``batch``."""
        return self.env[batch.idx]


class AnnealedPenaltyMethod(EnvironmentMethod):
    """Mean environment risk + ``w * penalty``, with the annealed weight ``w`` (`annealed_weight`: 1 for
    ``<prefix>_anneal_iters`` steps, then ``<prefix>_lambda``). Subclasses set ``prefix`` and implement
    `penalty`; the last step's penalty and weight are logged per epoch."""

    prefix: str = ""

    def penalty(self, logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor, risks: torch.Tensor) -> torch.Tensor:
        """The method's penalty for one batch (``risks``: the batch's per-environment mean losses)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        logits = model.head(model.features(batch.x))
        env = self.batch_env(batch)
        risks = environment_risks(self.loss_fn(logits, batch.y), env, self.n_envs)
        penalty = self.penalty(logits, batch.y, env, risks)
        weight = annealed_weight(self.steps, self.hparams[f"{self.prefix}_anneal_iters"],
                                 self.hparams[f"{self.prefix}_lambda"])
        self.steps += 1
        self._last = {f"{self.prefix}_penalty": penalty.detach(), "penalty_weight": weight}
        return risks.mean() + weight * penalty

    def epoch_log(self) -> dict[str, Any]:
        return last_values(getattr(self, "_last", {}))
