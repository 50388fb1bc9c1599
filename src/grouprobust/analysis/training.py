"""Training through the project's loop for the analyses, and reading heads and representations off models."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from grouprobust.config import RunConfig, resolve_hparams
from grouprobust.data.dataset import DatasetSplits
from grouprobust.methods.registry import get_method
from grouprobust.models import Classifier, compute_features
from grouprobust.result import RunResult
from grouprobust.training import Trainer


def train_model(splits: DatasetSplits, method: str, seed: int, hparams: dict[str, Any] | None = None,
                device: torch.device | None = None) -> tuple[Classifier, RunResult]:
    """Train ``method`` on ``splits`` with the project's `Trainer`; returns (final model, result dict).

    Only the last epoch is evaluated, so the model returned is the one the result describes
    (the analyses study where training ends, not an early-stopped checkpoint).
    """
    cls = get_method(method)
    resolved = resolve_hparams(cls, dict(hparams or {}))
    resolved["eval_every"] = resolved["epochs"]
    config = RunConfig(splits.name, method, int(seed), {}, resolved, "full", "val_worst_group_acc")
    trainer = Trainer(config, splits, device)
    result = trainer.fit()
    return trainer.model, result


def head_parameters(model: Classifier) -> tuple[np.ndarray, np.ndarray]:
    """The linear head's weight (classes × feature dim) and bias (classes), float64 on the CPU."""
    return (model.head.weight.detach().cpu().double().numpy().copy(),
            model.head.bias.detach().cpu().double().numpy().copy())


def embed(model: Classifier, x: np.ndarray, device: torch.device | None = None, chunk: int = 4096) -> np.ndarray:
    """``model.features`` of every row of ``x`` as a float32 array (n × feature dim)."""
    return compute_features(model, x, device or next(model.parameters()).device, chunk)


def embed_splits(model: Classifier, splits: DatasetSplits, device: torch.device | None = None) -> DatasetSplits:
    """``splits`` with every ``x`` replaced by the model's representation (labels and groups kept)."""
    parts = [replace(ds, x=embed(model, ds.x, device), inputs="features") for ds in splits]
    return DatasetSplits(*parts, name=splits.name, description=splits.description, meta=dict(splits.meta))

