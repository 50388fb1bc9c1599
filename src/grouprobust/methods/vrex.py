"""Risk Extrapolation, V-REx (Krueger et al. 2021): penalise the variance of the environment risks."""

from __future__ import annotations

import torch

from grouprobust.methods.environments import ENV_PARAMS, AnnealedPenaltyMethod, penalty_params
from grouprobust.methods.registry import register_method


def vrex_penalty(risks: torch.Tensor) -> torch.Tensor:
    """Variance of the environment risks ``mean_e (R_e - mean R)^2`` (population variance, ddof = 0,
    as DomainBed); 0 for a single environment."""
    return (risks - risks.mean()).pow(2).mean()


@register_method
class VREx(AnnealedPenaltyMethod):
    """V-REx: mean environment risk + ``w * Var_e(R_e)``, ``w = 1`` for ``vrex_anneal_iters`` steps,
    then ``vrex_lambda`` (the same schedule as IRM; no optimizer reset)."""

    name = "vrex"
    needs = "full"
    same_as = "DomainBed VREx; not in SubpopBench"
    summary = "V-REx: mean group risk + lambda * variance of the group risks in the batch"
    params = {**ENV_PARAMS, **penalty_params("vrex", 10.0, ("log_uniform", 0.1, 1e4), 500)}

    prefix = "vrex"

    def penalty(self, logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor, risks: torch.Tensor) -> torch.Tensor:
        return vrex_penalty(risks)
