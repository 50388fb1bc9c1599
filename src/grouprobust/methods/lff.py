"""Learning from Failure (Nam et al. 2020): a biased model trained alongside; the main model weights
each example by how much harder the biased model finds it. No group labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from grouprobust.methods.base import Batch, Method
from grouprobust.methods.context import MethodContext
from grouprobust.methods.registry import register_method
from grouprobust.params import Interval, Param


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Per-example GCE ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018): its gradient is ``p_y^q`` times
    cross-entropy's, so it amplifies the examples the model already finds easy."""
    p_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return (1.0 - p_y.clamp_min(1e-12).pow(q)) / q


def relative_difficulty(loss_biased: torch.Tensor, loss_main: torch.Tensor) -> torch.Tensor:
    """LfF's weights ``W = L_b / (L_b + L_d)`` in [0, 1]: near 1 where the biased model's loss dominates."""
    return loss_biased / (loss_biased + loss_main + 1e-8)


@register_method
class LfF(Method):
    """LfF: the biased model (created in `setup` with the run's architecture and optimizer) minimises
    GCE; each step, both models' per-example cross-entropies update exponential moving averages
    (rate ``lff_ema``), each divided by its maximum over the example's class, and the main model
    minimises ``W * CE`` with ``W`` = `relative_difficulty` of those averages. An example's first
    average is its first loss. The official code multiplies the GCE gradient by an extra ``q`` (a
    learning-rate factor); this uses GCE itself."""

    name = "lff"
    distributed = ("its biased second model and per-example loss averages would learn from each process's part "
                   "of the batch only")
    needs = "none"
    same_as = "LfF (Nam et al.); SubpopBench LfF uses the batch losses without moving averages"
    summary = "learning from failure: a GCE-trained biased model; main loss weighted by L_b / (L_b + L_d)"
    params = {
        "gce_q": Param(0.7, ("uniform", 0.1, 1.0), "GCE exponent q of the biased model",
                       Interval(0, 1, lo_open=True)),
        "lff_ema": Param(0.7, ("uniform", 0.0, 0.99), "moving-average rate of the per-example losses",
                         Interval(0, 1, hi_open=True)),
    }

    def setup(self, context: MethodContext) -> None:
        """Create the biased model and its optimizer, and the per-example loss averages."""
        #: The biased model, trained alongside the main one.
        self.biased = context.new_model()
        self.biased.train()
        self.biased_optimizer = context.new_optimizer(self.biased, self.hparams)
        n, device = self.data.n, self.data.device
        self.ema_biased = torch.zeros(n, device=device)
        self.ema_main = torch.zeros(n, device=device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=device)

    def _update_ema(self, ema: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
        rate = torch.where(self.seen[idx], self.hparams["lff_ema"], 0.0)
        ema[idx] = rate * ema[idx] + (1.0 - rate) * values

    def _class_normalised(self, ema: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_class_max = torch.zeros(self.data.n_classes, device=ema.device).scatter_reduce(
            0, self.data.y, ema, reduce="amax", include_self=True)
        return ema[idx] / per_class_max[y].clamp_min(1e-8)

    def weights(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The current `relative_difficulty` weights of the training examples ``idx`` with labels ``y``."""
        return relative_difficulty(self._class_normalised(self.ema_biased, idx, y),
                                   self._class_normalised(self.ema_main, idx, y))

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        idx, y = batch.idx, batch.y
        logits_b = self.biased(batch.x)
        logits_d = model(batch.x)
        with torch.no_grad():
            # ``idx`` may repeat in a batch; the moving average then keeps one of the values.
            self._update_ema(self.ema_biased, idx, F.cross_entropy(logits_b, y, reduction="none"))
            self._update_ema(self.ema_main, idx, F.cross_entropy(logits_d, y, reduction="none"))
            self.seen[idx] = True
            w = self.weights(idx, y)
        self.biased_optimizer.zero_grad(set_to_none=True)
        generalized_cross_entropy(logits_b, y, self.hparams["gce_q"]).mean().backward()
        self.biased_optimizer.step()
        self._mean_weight = w.detach().mean()  # read back once per epoch, in epoch_log
        return (w * self.loss_fn(logits_d, y)).mean()

    def epoch_log(self) -> dict[str, Any]:
        weight = getattr(self, "_mean_weight", None)
        return {"mean_weight": None if weight is None else float(weight)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "biased": self.biased.state_dict(),
                "biased_optimizer": self.biased_optimizer.state_dict(), "ema_biased": self.ema_biased,
                "ema_main": self.ema_main, "seen": self.seen, "mean_weight": getattr(self, "_mean_weight", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.biased.load_state_dict(state["biased"])
        self.biased_optimizer.load_state_dict(state["biased_optimizer"])
        for name in ("ema_biased", "ema_main", "seen"):
            getattr(self, name).copy_(state[name])
        if state["mean_weight"] is not None:
            self._mean_weight = state["mean_weight"]
