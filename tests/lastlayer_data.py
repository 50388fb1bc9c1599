"""Frozen features of a quickly trained ERM model, split as in GSR's protocol (for last-layer tests and reports).

Stage 1 trains ERM on a seeded 90% of train; the other 10% is the held-out set whose weights GSR
learns. Validation is cut into two disjoint halves: target (drives the reweighting / DFR's fit)
and validation (model selection). Test is only evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grouprobust.config import resolve_config
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.registry import load_dataset
from grouprobust.lastlayer import worst_group_accuracy
from grouprobust.models import pick_device
from grouprobust.models import predict_logits
from grouprobust.training import Trainer


@dataclass
class FeatureSets:
    """(X, y, g) per part; ``erm_test_wga`` is the stage-1 model's test worst-group accuracy."""

    held: tuple[np.ndarray, np.ndarray, np.ndarray]
    target: tuple[np.ndarray, np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray]
    erm_test_wga: float


def erm_features(dataset: str, seed: int, epochs: int, data: dict | None = None, **hparams) -> FeatureSets:
    """Train ERM for ``epochs`` on 90% of train and return the frozen features of every part."""
    config = resolve_config(dataset, "erm", seed, data or {}, {"epochs": epochs, **hparams}, regime="val")
    splits = load_dataset(dataset, seed, **config.data)
    perm = np.random.default_rng(seed).permutation(len(splits.train.y))
    cut = int(0.9 * len(perm))
    stage1 = DatasetSplits(splits.train.subset(perm[:cut]), splits.val, splits.test, splits.name,
                           splits.description, splits.meta)
    device = pick_device()
    trainer = Trainer(config, stage1, device)
    trainer.fit()
    model = trainer.model.eval()
    test_pred = predict_logits(model, splits.test.x, device).argmax(1).numpy()
    erm_wga = worst_group_accuracy(splits.test.y, test_pred, groups=splits.test.g)

    def feats(ds):
        with torch.no_grad():
            x = model.features(torch.as_tensor(ds.x).to(device)).cpu().numpy().astype(np.float64)
        return x, np.asarray(ds.y), np.asarray(ds.g)

    held = feats(splits.train.subset(perm[cut:]))
    Xv, yv, gv = feats(splits.val)
    halves = np.random.default_rng(seed + 1).permutation(len(yv))
    a, b = halves[: len(yv) // 2], halves[len(yv) // 2:]
    return FeatureSets(held, (Xv[a], yv[a], gv[a]), (Xv[b], yv[b], gv[b]), feats(splits.test), erm_wga)
