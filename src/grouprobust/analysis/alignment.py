"""Head-only fine-tuning on frozen features: alignment of each head with a spurious and an oracle head, over L2.

Reference heads (trained once per seed with ERM through the same loop, L2 ``ref_l2``):

* **spurious head** — trained on the training features with every label replaced by the class the
  example's attribute is most often paired with in training (``argmax_y count(y, a)``): a
  classifier that predicts the label *through the attribute*.
* **oracle head** — trained on the validation features with their true labels. In the embedded
  datasets the validation split has the attribute independent of the label (every group equally
  likely), so no spurious shortcut pays there.

When the dataset's ``meta`` carries ``core_direction`` / ``spurious_direction`` (spurious-gaussian
on raw inputs) the cosines with these true directions are reported too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from grouprobust.analysis.convexity import alignment_bound, group_objectives, head_theta
from grouprobust.analysis.geometry import cosine
from grouprobust.analysis.training import head_parameters, train_model
from grouprobust.config import resolve_hparams
from grouprobust.data.dataset import DatasetSplits
from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.methods.registry import get_method

#: Training settings of every head: a linear model on the features, near-full convergence.
HEAD_DEFAULTS: dict[str, Any] = {"model": "linear", "optimizer": "adam", "lr": 0.01, "batch_size": 256,
                                 "epochs": 100, "loss": "ce"}


def spurious_label_splits(splits: DatasetSplits) -> DatasetSplits:
    """``splits`` with each label replaced by the training class most often paired with the example's attribute."""
    train = splits.train
    if train.a is None:
        raise GroupRobustError("the alignment analysis needs attribute labels on the training split; "
                               "use a dataset or feature directory that carries them")
    label_of_attr = train.grouper.count_table(train.y, train.a).argmax(axis=0)  # per attribute value
    parts = [ds if ds.a is None else replace(ds, y=label_of_attr[ds.a]) for ds in splits]
    return DatasetSplits(*parts, name=splits.name, meta=dict(splits.meta))


def oracle_splits(splits: DatasetSplits) -> DatasetSplits:
    """The validation split used as training data (attribute independent of label there)."""
    val = splits.val
    if val.a is None:
        raise GroupRobustError("the oracle head is trained on the validation split, which carries no attributes "
                               "here; use a dataset whose validation split has group labels")
    counts = val.group_counts()
    if (counts == 0).any():
        raise GroupRobustError(f"the validation split misses {int((counts == 0).sum())} group(s), so the attribute "
                               "is not independent of the label there; the oracle head needs a balanced split")
    return DatasetSplits(replace(val, split="train"), val, splits.test, name=splits.name, meta=dict(splits.meta))


def reference_heads(splits: DatasetSplits, seed: int, hparams: dict[str, Any], ref_l2: float
                    ) -> dict[str, np.ndarray]:
    """Reference weight matrices (classes × dim): ``spurious``, ``oracle`` and, when known, ``true_core``/``true_spurious``."""
    hp = {**hparams, "weight_decay": ref_l2}
    refs = {name: head_parameters(train_model(make(splits), "erm", seed, hp)[0])[0]
            for name, make in (("spurious", spurious_label_splits), ("oracle", oracle_splits))}
    for key, name in (("core_direction", "true_core"), ("spurious_direction", "true_spurious")):
        direction = splits.meta.get(key)
        if direction is not None and splits.train.n_classes == 2 and len(direction) == splits.train.x[0].size:
            refs[name] = np.asarray(direction, np.float64)
    return refs


def _l2_divergence(err: DivergedError, method: str, l2: float, hparams: dict[str, Any]) -> GroupRobustError:
    """A head that diverged at L2 ``l2``: when the decay alone makes a step overshoot (``lr * l2 >= 1``), the
    error names l2 rather than the learning rate."""
    lr = float(resolve_hparams(get_method(method), dict(hparams))["lr"])
    if lr * l2 < 1:
        return err
    first = str(err).split(";")[0]
    return GroupRobustError(f"{method} diverged with l2={l2:g} ({first}): with lr={lr:g} each step's decay "
                            f"lr * l2 = {lr * l2:.3g} overshoots; use l2 values below {1 / lr:g}", subject="l2")


def alignment_sweep(splits: DatasetSplits, methods: Iterable[str], l2_values: Iterable[float], seed: int = 0,
                    hparams: dict[str, Any] | None = None, ref_l2: float = 1e-4,
                    on_model: Callable[[], None] | None = None) -> pd.DataFrame:
    """Train one head per (L2, method) and measure it; one row each.

    Columns: ``seed``, ``l2``, ``method``, ``cos_<reference>`` for every reference head,
    ``test_worst_group_acc``, ``test_avg_acc`` (fractions), ``train_worst_group_loss`` (regularised,
    nats); for each method other than ERM also ``wga_gain`` (its test worst-group accuracy minus
    ERM's), and from `alignment_bound`: ``loss_gap``, ``bound``, ``mu``, ``grad_norm``, ``dist``, ``cos_heads``.
    ``on_model()``, if given, is called after each head (the two reference heads included).
    """
    methods = list(dict.fromkeys(methods))
    if "erm" not in methods:
        raise GroupRobustError("the alignment analysis compares methods with ERM; include erm in --methods")
    methods = ["erm"] + [m for m in methods if m != "erm"]  # every other head is compared with ERM's
    hp = {**HEAD_DEFAULTS, **(hparams or {})}
    refs = reference_heads(splits, seed, hp, ref_l2)
    for _ in range(2):
        if on_model is not None:
            on_model()
    train = splits.train
    x = train.x.reshape(len(train), -1)
    rows = []
    for l2 in l2_values:
        thetas, accs = {}, {}
        for method in methods:
            try:
                model, result = train_model(splits, method, seed, {**hp, "weight_decay": float(l2)})
            except DivergedError as err:
                raise _l2_divergence(err, method, float(l2), hp) from None
            weight, bias = head_parameters(model)
            thetas[method] = head_theta(weight, bias)
            test = result["metrics"]["test"]
            accs[method] = test["worst_group_acc"]
            row = {"seed": seed, "l2": float(l2), "method": method,
                   **{f"cos_{name}": cosine(weight, ref) for name, ref in refs.items()},
                   "test_worst_group_acc": test["worst_group_acc"], "test_avg_acc": test["avg_acc"],
                   "train_worst_group_loss": float(np.nanmax(group_objectives(
                       thetas[method], x, train.y, train.g, train.n_groups, float(l2))))}
            if method != "erm":
                row["wga_gain"] = accs[method] - accs["erm"]
                row.update(alignment_bound(thetas["erm"], thetas[method], x, train.y, train.g, train.n_groups,
                                           float(l2)))
            rows.append(row)
            if on_model is not None:
                on_model()
    return pd.DataFrame(rows)
