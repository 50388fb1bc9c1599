"""Completeness of learned representations (DCI) for end-to-end models, e.g. ERM vs GroupDRO.

Each method is trained end to end through the project's loop; its representation is
``model.features`` on the test split (where the attribute is independent of the label in the
embedded datasets, so the two factors are not confounded). DCI is computed for the factors
``label`` and ``attribute`` with scikit-learn random forests (`grouprobust.analysis.dci_metrics`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from grouprobust.analysis.dci_metrics import dci
from grouprobust.analysis.training import embed, train_model
from grouprobust.data.dataset import DatasetSplits
from grouprobust.errors import GroupRobustError


def completeness_runs(splits: DatasetSplits, methods: Iterable[str], seed: int = 0,
                      hparams: dict[str, Any] | None = None, split: str = "test",
                      on_model: Callable[[], None] | None = None) -> pd.DataFrame:
    """Train each method end to end and score its representation; one row per method.

    Columns: ``seed``, ``method``, ``feature_dim``, ``disentanglement``, ``completeness_label``,
    ``completeness_attribute``, ``completeness_mean``, ``informativeness_label`` and
    ``informativeness_attribute`` (held-out accuracies of the factor predictors, fractions),
    ``test_worst_group_acc``, ``test_avg_acc``. ``on_model()``, if given, is called after each model.
    """
    data = splits.split(split)
    if data.a is None:
        raise GroupRobustError(f"the {split} split carries no attribute labels; DCI needs both factors (label, "
                               "attribute): choose a split or dataset with group labels")
    factors = np.stack([data.y, data.a], axis=1)
    rows = []
    for method in methods:
        model, result = train_model(splits, method, seed, hparams)
        codes = embed(model, data.x)
        scores = dci(codes, factors, ["label", "attribute"], seed=seed)
        test = result["metrics"]["test"]
        rows.append({"seed": seed, "method": method, "feature_dim": codes.shape[1],
                     "disentanglement": scores.disentanglement,
                     "completeness_label": scores.completeness["label"],
                     "completeness_attribute": scores.completeness["attribute"],
                     "completeness_mean": scores.mean_completeness,
                     "informativeness_label": scores.informativeness["label"],
                     "informativeness_attribute": scores.informativeness["attribute"],
                     "test_worst_group_acc": test["worst_group_acc"], "test_avg_acc": test["avg_acc"]})
        if on_model is not None:
            on_model()
    return pd.DataFrame(rows)
