"""Invariant Risk Minimization, IRMv1 (Arjovsky et al. 2019): a classifier optimal in every environment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grouprobust.losses import LossFn
from grouprobust.methods.environments import ENV_PARAMS, AnnealedPenaltyMethod, penalty_params
from grouprobust.methods.registry import register_method


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def irm_penalty(logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor, loss_fn: LossFn = _ce) -> torch.Tensor:
    """IRMv1 penalty: the mean over the environments present of ``(d R_e(w * logits) / dw at w = 1)^2``.

    ``R_e`` is environment ``e``'s mean ``loss_fn``; the penalty is zero exactly when scaling the
    logits cannot lower any environment's risk (the classifier is optimal, to first order, in
    every environment). Differentiable (``create_graph``), a scalar tensor.
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    penalties = []
    for e in torch.unique(env):
        m = env == e
        risk = loss_fn(logits[m] * scale, y[m]).mean()
        (grad,) = torch.autograd.grad(risk, scale, create_graph=True)
        penalties.append(grad.pow(2))
    return torch.stack(penalties).mean()


@register_method
class IRM(AnnealedPenaltyMethod):
    """IRMv1: mean environment risk + ``w * irm_penalty``, with ``w = 1`` for the first
    ``irm_anneal_iters`` steps and ``irm_lambda`` after (DomainBed's schedule; DomainBed also resets
    Adam when the weight changes, this does not). The squared gradient is taken on each whole
    environment batch, as in the IRM paper's equation, not DomainBed's product of two half-batches."""

    name = "irm"
    needs = "full"
    same_as = "SubpopBench IRM (there env=attribute, the two-half-batch penalty), DomainBed IRM"
    summary = "IRMv1: mean group risk + lambda * squared gradient of each group's risk w.r.t. a logit scale"
    params = {**ENV_PARAMS, **penalty_params("irm", 100.0, ("log_uniform", 0.1, 1e4), 500)}

    prefix = "irm"

    def penalty(self, logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor, risks: torch.Tensor) -> torch.Tensor:
        return irm_penalty(logits, y, env, self.loss_fn)
