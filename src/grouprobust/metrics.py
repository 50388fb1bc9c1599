"""Evaluation metrics of one split: accuracies per group and class, precision / F1, AUROC, AUPRC, calibration.

All figures are fractions in [0, 1]. A group or class with no sample in the split is reported with
``n = 0`` and ``None`` figures and left out of every worst-case and average figure. A figure that
is undefined (AUROC of a subset holding one class only, figures that need group labels the split
does not carry) is ``None`` and its reason is given in ``M["undefined"][key]``: never NaN, so the
dict always serialises as strict JSON. Exact definitions and their sources: ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError

if TYPE_CHECKING:
    from grouprobust.data.dataset import GroupDataset

ECE_BINS = 15  # Guo et al. (2017) use 15 equal-width bins of top-label confidence


def _accuracy_table(correct: np.ndarray, membership: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-group accuracy from a boolean (n, m) membership matrix."""
    counts = membership.sum(axis=0)
    hits = (membership & correct[:, None]).sum(axis=0)
    table = {}
    for j, name in enumerate(names):
        n = int(counts[j])
        table[str(j)] = {"name": name, "acc": float(hits[j] / n) if n else None, "n": n}
    return table


def _summaries(table: dict[str, dict[str, Any]], key: str = "acc") -> tuple[float | None, float | None]:
    """(minimum, unweighted mean) of ``key`` over the table's entries where it is defined."""
    values = [v[key] for v in table.values() if v.get(key) is not None]
    if not values:
        return None, None
    return float(min(values)), float(np.mean(values))


def group_accuracy_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None, n_groups: int,
                           n_classes: int, group_names: Sequence[str] | None = None,
                           eval_groups: np.ndarray | None = None,
                           eval_group_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy part of the metrics dict ``M`` for one split, from hard predictions.

    Returns ``{"avg_acc", "worst_class_acc", "balanced_acc", "worst_group_acc", "group_balanced_acc",
    "per_group": {"<g>": {"name", "acc", "n"}}, "per_class": {...}, "empty_groups": [...]}``;
    the group entries are ``None`` when ``groups`` is None. With ``eval_groups`` (boolean (n, m),
    possibly overlapping) an ``"eval_groups"`` entry holds the same worst/balanced/per-group figures.
    `group_metrics` adds the probability-based figures on top of these.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    correct = y_true == y_pred
    class_table = _accuracy_table(correct, y_true[:, None] == np.arange(n_classes)[None, :],
                                  [f"y={c}" for c in range(n_classes)])
    worst_class, balanced = _summaries(class_table)
    out: dict[str, Any] = {
        "avg_acc": float(correct.mean()) if len(correct) else None,
        "worst_class_acc": worst_class,
        "balanced_acc": balanced,
        "per_class": class_table,
        "worst_group_acc": None, "group_balanced_acc": None, "per_group": None, "empty_groups": [],
    }
    if groups is not None:
        names = list(group_names) if group_names is not None else [str(g) for g in range(n_groups)]
        table = _accuracy_table(correct, np.asarray(groups)[:, None] == np.arange(n_groups)[None, :], names)
        out["worst_group_acc"], out["group_balanced_acc"] = _summaries(table)
        out["per_group"] = table
        out["empty_groups"] = [v["name"] for v in table.values() if v["n"] == 0]
    if eval_groups is not None:
        eg = np.asarray(eval_groups, dtype=bool)
        names = list(eval_group_names) if eval_group_names is not None else [f"eval{j}" for j in range(eg.shape[1])]
        table = _accuracy_table(correct, eg, names)
        worst, mean = _summaries(table)
        out["eval_groups"] = {"worst_group_acc": worst, "group_balanced_acc": mean, "per_group": table}
    return out


# -- probability-based figures -------------------------------------------------------------------------

def binary_ranking_scores(positive: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(AUROC, average precision) of ``score`` for the boolean ``positive``; both classes must be present.

    One descending sort; tied scores form one threshold. AUROC is the trapezoidal area under the ROC
    points (ties count one half), average precision is ``sum_k (R_k - R_{k-1}) P_k`` over the
    thresholds: the definitions of scikit-learn's ``roc_auc_score`` and ``average_precision_score``
    (tested equal), whose input checks cost 10-40x more per call, too much for the per-class and
    per-attribute figures of every evaluation in the training loop.
    """
    order = np.argsort(-np.asarray(score), kind="stable")
    ranked, hits = np.asarray(score)[order], np.asarray(positive, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each tie block
    tp = np.cumsum(hits)[last].astype(float)
    fp = last + 1 - tp
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    average_precision = float(np.sum(np.diff(tpr) * tp / (tp + fp)))
    return auroc, average_precision


def _binary_scores(positive: np.ndarray, score: np.ndarray) -> tuple[tuple[float, float] | None, str | None]:
    """`binary_ranking_scores`, or (None, reason) unless both classes are present."""
    n_pos = int(positive.sum())
    if len(positive) == 0:
        return None, "no samples"
    if n_pos == 0 or n_pos == len(positive):
        return None, f"only {'negatives' if n_pos == 0 else 'positives'} present ({len(positive)} samples)"
    return binary_ranking_scores(positive, score), None


def _class_ranking_scores(y_true: np.ndarray, probs: np.ndarray) -> dict[int, tuple[tuple[float, float] | None, str | None]]:
    """One-vs-rest (AUROC, AP) of every class c: ``y == c`` scored by ``probs[:, c]``."""
    return {c: _binary_scores(y_true == c, probs[:, c]) for c in range(probs.shape[1])}


def _combine(per_class: dict, y_true: np.ndarray, n_classes: int) -> tuple[tuple[float, float] | None, str | None]:
    """Overall (AUROC, AP): class 1's for binary, else the mean over the classes present (one-vs-rest macro)."""
    if n_classes == 2:
        return per_class[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return None, (f"only one class present ({len(y_true)} samples)" if len(y_true) else "no samples")
    pairs = [per_class[int(c)][0] for c in present]
    return (float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))), None


def ranking_score(y_true: np.ndarray, probs: np.ndarray, kind: str = "auroc") -> tuple[float | None, str | None]:
    """AUROC (``kind="auroc"``) or average precision (``kind="auprc"``) of class probabilities (n, K).

    Binary (K = 2): the score of class 1. Multiclass: one-vs-rest, the unweighted mean over the
    classes present in ``y_true`` (equal to scikit-learn's ``roc_auc_score(multi_class="ovr")`` and
    macro ``average_precision_score`` when every class is present). Returns ``(value, None)``, or
    ``(None, reason)`` when fewer than two classes are present.
    """
    y_true = np.asarray(y_true)
    classes = range(probs.shape[1]) if probs.shape[1] > 2 else [1]
    per_class = {c: _binary_scores(y_true == c, probs[:, c]) for c in classes}
    pair, reason = _combine(per_class, y_true, probs.shape[1])
    return (None, reason) if pair is None else (pair[0 if kind == "auroc" else 1], None)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float | None:
    """Top-label expected calibration error, a fraction in [0, 1] (None for an empty split).

    Confidence = the largest class probability; samples fall into ``n_bins`` equal-width bins
    ``(b/B, (b+1)/B]`` (confidence 0 goes to the first); ECE = sum over bins of
    ``n_bin / n * |accuracy_bin - mean confidence_bin|`` (Guo et al., 2017, eq. 3).
    """
    if len(y_true) == 0:
        return None
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct.astype(float), minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(y_true))


def cell_precision_f1(y_true: np.ndarray, y_pred: np.ndarray, attrs: np.ndarray, n_classes: int, n_attrs: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision and F1 of each class within each attribute value, from one confusion count.

    Returns ``(precision, f1, n_true, n_predicted)``, arrays of shape (n_attrs, n_classes). Cell
    (a, y) has precision P(Y = y | prediction y, A = a) and recall P(prediction y | Y = y, A = a) (the
    accuracy of group (y, a)); a class never predicted, or never present, in a cell gets 0, as
    scikit-learn's ``precision_recall_fscore_support(zero_division=0)`` (tested equal; it costs ~10 ms
    a call, too much for every evaluation). With ``n_attrs=1`` and ``attrs`` all 0: the class figures.
    """
    conf = np.bincount((attrs * n_classes + y_true) * n_classes + y_pred,
                       minlength=n_attrs * n_classes * n_classes).reshape(n_attrs, n_classes, n_classes)
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(float)
    n_predicted, n_true = conf.sum(axis=1), conf.sum(axis=2)
    precision = tp / np.maximum(n_predicted, 1)
    recall = tp / np.maximum(n_true, 1)
    with np.errstate(invalid="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, f1, n_true, n_predicted


def _class_precision_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, per_class: dict) -> dict[str, Any]:
    """SubpopBench's class-level precision and F1 (its ``classification_report(zero_division=0)`` figures).

    Macro = mean over the classes present in ``y_true`` or ``y_pred``; worst = min over the classes
    present in ``y_true``; a class predicted but never present gets precision 0.
    """
    precision, f1, n_true, n_predicted = (v[0] for v in cell_precision_f1(
        y_true, y_pred, np.zeros_like(y_true), n_classes, 1))
    labels = np.flatnonzero((n_true > 0) | (n_predicted > 0))
    for c, entry in per_class.items():
        shown = n_true[int(c)] > 0 or n_predicted[int(c)] > 0
        entry.update(precision=float(precision[int(c)]) if shown else None, f1=float(f1[int(c)]) if shown else None)
    seen = n_true > 0
    return {
        "macro_precision": float(precision[labels].mean()) if len(labels) else None,
        "macro_f1": float(f1[labels].mean()) if len(labels) else None,
        "worst_class_precision": float(precision[seen].min()) if seen.any() else None,
        "worst_class_f1": float(f1[seen].min()) if seen.any() else None,
    }


def blockwise_auroc(positive: np.ndarray, score: np.ndarray, block: np.ndarray, n_blocks: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROC of ``score`` for ``positive`` within each block (e.g. attribute value), in one pass.

    Returns ``(auroc, n_pos, n_neg)``, arrays of shape (n_blocks,); auroc is NaN where a block lacks
    positives or negatives. The Mann-Whitney form (ties count one half), which equals scikit-learn's
    ``roc_auc_score`` on each block (tested): one sort instead of one call per block.
    """
    positive = np.asarray(positive, dtype=bool)
    order = np.lexsort((score, block))  # by block, then score ascending
    b, s, hit = block[order], score[order], positive[order]
    n = len(b)
    starts_run = np.r_[True, (np.diff(b) != 0) | (np.diff(s) != 0)]  # runs of tied scores inside a block
    run_start = np.flatnonzero(starts_run)
    run_len = np.diff(np.r_[run_start, n])
    n_tot = np.bincount(b, minlength=n_blocks)
    block_start = np.r_[0, np.cumsum(n_tot)[:-1]]
    rank = (run_start - block_start[b[run_start]] + (run_len + 1) / 2)[np.cumsum(starts_run) - 1]
    n_pos = np.bincount(b, weights=hit, minlength=n_blocks)
    rank_sum = np.bincount(b, weights=rank * hit, minlength=n_blocks)
    n_neg = n_tot - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auroc, np.nan), n_pos, n_neg


def _attribute_table(y: np.ndarray, probs: np.ndarray, correct: np.ndarray, attrs: np.ndarray,
                     n_attrs: int) -> dict[str, dict[str, Any]]:
    """Accuracy and AUROC within each attribute value (SubpopBench's ``per_attribute``).

    AUROC: binary, of class 1; multiclass, the one-vs-rest mean over the classes present in the subset.
    """
    table = _accuracy_table(correct, attrs[:, None] == np.arange(n_attrs)[None, :], [f"a={a}" for a in range(n_attrs)])
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    aucs, present = [], []
    for c in classes:
        auc, n_pos, _ = blockwise_auroc(y == c, probs[:, c], attrs, n_attrs)
        aucs.append(auc)
        present.append(n_pos > 0)
    aucs, present = np.array(aucs), np.array(present)
    for a, entry in enumerate(table.values()):
        n_present = len(np.unique(y[attrs == a])) if entry["n"] else 0
        if n_present < 2:
            entry["auroc"] = None
            entry["auroc_undefined"] = f"only one class present ({entry['n']} samples)" if entry["n"] else "no samples"
        else:
            entry["auroc"] = float(aucs[present[:, a], a].mean()) if probs.shape[1] > 2 else float(aucs[0, a])
    return table


def _add_auroc(table: dict[str, dict[str, Any]], y: np.ndarray, probs: np.ndarray,
               membership: np.ndarray) -> dict[str, dict[str, Any]]:
    """Add each subset's AUROC (``auroc``, and ``auroc_undefined`` with the reason) to a per-subset table."""
    for j, entry in enumerate(table.values()):
        mask = membership[:, j]
        entry["auroc"], reason = ranking_score(y[mask], probs[mask])
        if reason:
            entry["auroc_undefined"] = reason
    return table


def _worst(table: dict[str, dict[str, Any]], key: str, what: str) -> tuple[float | None, str | None]:
    worst, _ = _summaries(table, key)
    return (worst, None) if worst is not None else (None, f"{key} is undefined for every {what}")


def _train_weighted(per_group: dict[str, dict[str, Any]], train_counts: np.ndarray) -> tuple[float | None, str | None]:
    """Test group accuracies weighted by training group proportions (renormalised over groups present)."""
    weights = np.asarray(train_counts, dtype=float)
    if len(weights) != len(per_group):
        raise GroupRobustError(f"train group counts have {len(weights)} entries for {len(per_group)} groups; "
                               "pass the training split's group_counts() of the same dataset")
    accs = np.array([v["acc"] if v["acc"] is not None else np.nan for v in per_group.values()])
    use = (weights > 0) & ~np.isnan(accs)
    if not use.any():
        return None, "no group has both training samples and samples in this split"
    return float((weights[use] * accs[use]).sum() / weights[use].sum()), None


def group_metrics(y_true: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None,
                  n_groups: int | None = None, group_names: Sequence[str] | None = None,
                  eval_groups: np.ndarray | None = None, eval_group_names: Sequence[str] | None = None,
                  attrs: np.ndarray | None = None, n_attrs: int | None = None,
                  train_group_counts: np.ndarray | None = None, ece_bins: int = ECE_BINS) -> dict[str, Any]:
    """The full metrics dict ``M`` of one split from class probabilities ``probs`` (n, n_classes).

    Predictions are ``probs.argmax(1)``. Contains everything `group_accuracy_metrics` returns plus:
    ``adjusted_acc``, ``train_weighted_avg_acc`` (given ``train_group_counts``), ``macro_precision``,
    ``worst_class_precision``, ``macro_f1``, ``worst_class_f1``, ``worst_group_precision``,
    ``worst_group_f1`` (given ``attrs``), ``class_acc_diff``, ``auroc``, ``worst_attr_auroc`` and
    ``per_attr`` (given ``attrs``), ``auprc``, ``ece`` with ``ece_bins``, per-class precision / F1 /
    AUROC, and for ``eval_groups`` the WILDS worst-group accuracy over (evaluation group, class)
    cells (``eval_groups.wilds_worst_group_acc``). ``undefined`` maps every ``None`` figure to its reason.
    Raises `GroupRobustError` on probabilities that are not finite or of the wrong shape.
    """
    y = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(y) or probs.shape[1] < 2:
        raise GroupRobustError(f"probabilities must have shape ({len(y)}, n_classes >= 2), got {probs.shape}; "
                               "pass softmax(logits) for every sample")
    if not np.all(np.isfinite(probs)):
        raise GroupRobustError("probabilities contain NaN or inf; the model diverged or the inputs are not finite")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4) or probs.min(initial=0.0) < 0:
        raise GroupRobustError("probabilities must be non-negative and sum to 1 per sample; pass softmax(logits), "
                               "not logits")
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    if groups is not None and n_groups is None:
        raise GroupRobustError("n_groups is required with groups; pass the dataset's n_groups")
    out = group_accuracy_metrics(y, pred, groups, n_groups or 0, n_classes, group_names, eval_groups, eval_group_names)
    undefined: dict[str, str] = {}
    correct = pred == y

    def put(key: str, value: float | None, reason: str | None) -> None:
        out[key] = value
        if value is None:
            undefined[key] = reason or "undefined"

    no_groups = "this split carries no group labels"
    # SubpopBench's "adjusted accuracy": the unweighted mean of per-group accuracies over the groups present
    # in the split (subpopbench/utils/eval_helper.py, eval_metrics: res['adjusted_accuracy']), which is
    # our group_balanced_acc.
    put("adjusted_acc", out["group_balanced_acc"], None if groups is not None else no_groups)
    if groups is None:
        put("train_weighted_avg_acc", None, no_groups)
    elif train_group_counts is None:
        put("train_weighted_avg_acc", None, "training group counts were not given")
    else:
        put("train_weighted_avg_acc", *_train_weighted(out["per_group"], train_group_counts))

    out.update(_class_precision_f1(y, pred, n_classes, out["per_class"]))
    class_accs = [v["acc"] for v in out["per_class"].values() if v["acc"] is not None]
    out["class_acc_diff"] = float(sum(abs(a - b) for i, a in enumerate(class_accs) for b in class_accs[i + 1:]))
    class_scores = _class_ranking_scores(y, probs)
    for c, entry in out["per_class"].items():
        pair, reason = class_scores[int(c)]
        entry["auroc"] = None if pair is None else pair[0]
        if reason:
            entry["auroc_undefined"] = reason
    pair, reason = _combine(class_scores, y, n_classes)
    put("auroc", None if pair is None else pair[0], reason)
    put("auprc", None if pair is None else pair[1], reason)
    out["ece"] = expected_calibration_error(y, probs, ece_bins)
    out["ece_bins"] = ece_bins

    if attrs is not None and n_attrs:
        attrs = np.asarray(attrs).astype(np.int64)
        out["per_attr"] = _attribute_table(y, probs, correct, attrs, n_attrs)
        put("worst_attr_auroc", *_worst(out["per_attr"], "auroc", "attribute value"))
    else:
        out["per_attr"] = None
        put("worst_attr_auroc", None, "this split carries no attribute labels")

    cells_are_groups = (groups is not None and attrs is not None and n_attrs and n_groups == n_classes * n_attrs
                        and np.array_equal(np.asarray(groups), y * n_attrs + attrs))
    if cells_are_groups:
        # group g = (y, a) is cell [a, y]; groups with no sample get None and stay out of the worst figures
        precision, f1, n_true, _ = (v.T.reshape(-1) for v in cell_precision_f1(y, pred, attrs, n_classes, n_attrs))
        for g, entry in out["per_group"].items():
            has = n_true[int(g)] > 0
            entry["precision"], entry["f1"] = (float(precision[int(g)]), float(f1[int(g)])) if has else (None, None)
        put("worst_group_precision", *_worst(out["per_group"], "precision", "group"))
        put("worst_group_f1", *_worst(out["per_group"], "f1", "group"))
    else:
        reason = no_groups if groups is None else "groups are not (class, attribute) pairs y * n_attrs + a"
        put("worst_group_precision", None, reason)
        put("worst_group_f1", None, reason)

    if eval_groups is not None:
        out["eval_groups"].update(_eval_group_figures(out["eval_groups"]["per_group"], y, probs, correct,
                                                      np.asarray(eval_groups, dtype=bool), n_classes))
    for key in ("worst_group_acc", "group_balanced_acc"):
        if out[key] is None:
            undefined[key] = no_groups if groups is None else "every group is empty in this split"
    out["undefined"] = undefined
    return out


def _eval_group_figures(per_group: dict[str, dict[str, Any]], y: np.ndarray, probs: np.ndarray,
                        correct: np.ndarray, eval_groups: np.ndarray, n_classes: int) -> dict[str, Any]:
    """WILDS CivilComments worst-group accuracy over overlapping evaluation groups.

    WILDS (wilds/datasets/civilcomments_dataset.py, ``CivilCommentsDataset.eval``) crosses each identity
    with the label (groupers over ``[identity, 'y']``) and takes the minimum accuracy over the cells where
    the identity is present: one cell per (evaluation group, class). Empty cells are left out (WILDS
    counts an empty cell as accuracy 0, which never happens on its data). Also adds each group's AUROC
    (Borkan et al.'s "subgroup AUC") to ``per_group`` and their minimum.
    """
    names = [v["name"] for v in per_group.values()]
    cells = np.concatenate([eval_groups & (y == c)[:, None] for c in range(n_classes)], axis=1)
    cell_table = _accuracy_table(correct, cells, [f"{name},y={c}" for c in range(n_classes) for name in names])
    _add_auroc(per_group, y, probs, eval_groups)
    return {
        "wilds_worst_group_acc": _summaries(cell_table)[0],
        "per_group_class": cell_table,
        "worst_group_auroc": _summaries(per_group, "auroc")[0],
    }


def dataset_metrics(dataset: "GroupDataset", probs: np.ndarray, train_group_counts: np.ndarray | None = None,
                    ece_bins: int = ECE_BINS) -> dict[str, Any]:
    """`group_metrics` of ``probs`` (n, n_classes) on a `GroupDataset`, using the labels it carries."""
    return group_metrics(dataset.y, probs, dataset.g, dataset.n_groups, dataset.group_names, dataset.eval_groups,
                         dataset.eval_group_names, dataset.a, dataset.n_attrs, train_group_counts, ece_bins)
