"""Risk Extrapolation, V-REx (Krueger et al. 2021): penalise the variance of the environment risks."""

from __future__ import annotations

from typing import Any

import torch

from grouprobust.methods.base import Batch, last_values
from grouprobust.methods.environments import (ENV_PARAMS, EnvironmentMethod, annealed_weight, environment_risks,
                                              penalty_params)
from grouprobust.methods.registry import register_method


def vrex_penalty(risks: torch.Tensor) -> torch.Tensor:
    """Variance of the environment risks ``mean_e (R_e - mean R)^2`` (population variance, ddof = 0,
    as DomainBed); 0 for a single environment."""
    return (risks - risks.mean()).pow(2).mean()


@register_method
class VREx(EnvironmentMethod):
    """V-REx: mean environment risk + ``w * Var_e(R_e)``, ``w = 1`` for ``vrex_anneal_iters`` steps,
    then ``vrex_lambda`` (the same schedule as IRM; no optimizer reset)."""

    name = "vrex"
    needs = "full"
    same_as = "DomainBed VREx; not in SubpopBench"
    summary = "V-REx: mean group risk + lambda * variance of the group risks in the batch"
    params = {**ENV_PARAMS, **penalty_params("vrex", 10.0, ("log_uniform", 0.1, 1e4), 500)}

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        logits = model.head(model.features(batch.x))
        risks = environment_risks(self.loss_fn(logits, batch.y), self.batch_env(batch), self.n_envs)
        penalty = vrex_penalty(risks)
        weight = annealed_weight(self.steps, self.hparams["vrex_anneal_iters"], self.hparams["vrex_lambda"])
        self.steps += 1
        self._last = {"vrex_penalty": penalty.detach(), "penalty_weight": weight}
        return risks.mean() + weight * penalty

    def epoch_log(self) -> dict[str, Any]:
        return last_values(getattr(self, "_last", {}))
