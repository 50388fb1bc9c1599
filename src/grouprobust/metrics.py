"""Evaluation metrics of one split: accuracies per group and class, precision / F1, AUROC, AUPRC, calibration.

`group_metrics` (and `dataset_metrics` on a `GroupDataset`) return the whole metrics dict ``M``. It is
the `merge_metrics` of small pieces, each usable alone and returning the fragment of ``M`` it fills
(same keys and nesting; an ``"undefined"`` entry gives the reason of each figure that can be ``None``):
`group_accuracy_metrics` (accuracies, from hard predictions), `train_weighted_accuracy`,
`precision_f1_metrics`, `class_acc_difference`, `group_cell_metrics` (per-group precision / F1),
and from probabilities `ranking_metrics` (AUROC / AUPRC), `calibration_metrics` (ECE),
`attribute_metrics` (per attribute value) and `eval_group_metrics` (WILDS overlapping groups).
Lower-level: `group_means` (per-group accuracies and mean losses, also used by `grouprobust.lastlayer`),
`ranking_scores_by_block`, `binary_ranking_scores`, `ranking_score`,
`expected_calibration_error`, `cell_precision_f1`, `check_probabilities`.

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
from grouprobust.grouping import Grouper

if TYPE_CHECKING:
    from grouprobust.data.dataset import GroupDataset

ECE_BINS = 15  # Guo et al. (2017) use 15 equal-width bins of top-label confidence
Scored = tuple[tuple[float, float] | None, str | None]  # ((AUROC, AP), None) or (None, why undefined)


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(means, counts)`` over the groups ``0 .. n_groups-1``: the mean of ``values`` ``(n,)`` over each
    group's samples (NaN for a group with none) and the group's sample count, both ``(n_groups,)``.

    ``groups`` is one id per sample (an id outside ``0 .. n_groups-1`` puts the sample in no group) or a
    boolean ``(n, n_groups)`` membership matrix of possibly overlapping groups. With ``values`` the 0/1
    correctness of predictions the means are the per-group accuracies (fractions in [0, 1]): the one
    per-group accuracy of the project, behind the metrics, the last-layer estimators and their scorers.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if groups.ndim == 2:
        members = groups.astype(np.float64)
        counts, sums = members.sum(axis=0), values @ members
    else:
        keep = (groups >= 0) & (groups < n_groups)
        counts = np.bincount(groups[keep], minlength=n_groups).astype(np.float64)
        sums = np.bincount(groups[keep], weights=values[keep], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), counts.astype(np.int64)


def _accuracy_table(correct: np.ndarray, groups: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-group ``{"name", "acc", "n"}`` (`group_means` of ``correct``; ``acc`` None for an empty group)."""
    accs, counts = group_means(correct, groups, len(names))
    return {str(j): {"name": name, "acc": None if counts[j] == 0 else float(accs[j]), "n": int(counts[j])}
            for j, name in enumerate(names)}


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
    class_table = _accuracy_table(correct, y_true, [f"y={c}" for c in range(n_classes)])
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
        table = _accuracy_table(correct, np.asarray(groups), names)
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

def ranking_scores_by_block(positive: np.ndarray, score: np.ndarray, block: np.ndarray | None = None,
                            n_blocks: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AUROC and average precision of each score column within each block, all in one pass.

    ``positive`` and ``score``: shape (n, C) (C one-vs-rest problems); ``block``: (n,) ids in
    0..n_blocks-1 (e.g. attribute values; None = one block). Returns ``(auroc, ap, n_pos, n_neg)``,
    each (n_blocks, C); auroc and ap are NaN where a block lacks positives or negatives.
    Definitions of scikit-learn's ``roc_auc_score`` (area under the ROC steps; tied scores count one
    half) and ``average_precision_score`` (sum over distinct thresholds of recall gain x precision),
    tested equal. scikit-learn would need one call per (block, column), and its input checks cost
    10-40x more than the metric itself on the ~100 subsets of each evaluation.
    """
    # work on (C, n) rows: sorting along contiguous rows is several times faster than along columns
    positive = np.ascontiguousarray(np.asarray(positive, dtype=bool).T)
    score = np.ascontiguousarray(np.asarray(score, dtype=float).T)
    c, n = score.shape
    block = np.zeros(n, dtype=np.int64) if block is None else np.asarray(block, dtype=np.int64)
    small_block = block.astype(np.int16) if n_blocks < 2**15 else block  # 16-bit keys sort by radix
    by_score = np.argsort(score, axis=1)  # order among tied scores is irrelevant: ties form one run
    order = np.take_along_axis(by_score, np.argsort(small_block[by_score], axis=1, kind="stable"), axis=1)
    s, hit, b = np.take_along_axis(score, order, 1), np.take_along_axis(positive, order, 1), block[order]
    idx = np.broadcast_to(np.arange(n), (c, n))
    last = np.ones((c, 1), dtype=bool)
    new_block = np.ones((c, n), dtype=bool)
    new_block[:, 1:] = b[:, 1:] != b[:, :-1]
    new_run = new_block.copy()  # a run: equal scores inside one block (ascending order)
    new_run[:, 1:] |= s[:, 1:] != s[:, :-1]

    def first(starts: np.ndarray) -> np.ndarray:  # index of the first element of each element's run
        return np.maximum.accumulate(np.where(starts, idx, 0), axis=1)

    def final(starts: np.ndarray) -> np.ndarray:  # index of the last element of each element's run
        ends = np.concatenate([starts[:, 1:], last], axis=1)
        return np.minimum.accumulate(np.where(ends, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]

    run_start, run_end, block_start, block_end = first(new_run), final(new_run), first(new_block), final(new_block)
    cells = b * c + np.arange(c)[:, None]

    def count(w: np.ndarray) -> np.ndarray:  # sum of w per (block, column)
        return np.bincount(cells.ravel(), weights=w.ravel(), minlength=n_blocks * c).reshape(n_blocks, c)

    n_pos, n_tot = count(hit.astype(float)), count(np.ones((c, n)))
    n_neg = n_tot - n_pos
    # AUROC (Mann-Whitney): average rank of each sample inside its block, ties sharing their mean rank
    rank = (run_start + run_end) / 2 - block_start + 1
    # AP: at each run end (one distinct threshold), the positives of the run times the precision of
    # everything scoring at least as high in the block
    cum = np.cumsum(hit, axis=1)
    before = np.where(run_start > 0, np.take_along_axis(cum, np.maximum(run_start - 1, 0), 1), 0)
    at_least = np.take_along_axis(cum, block_end, 1) - before
    run_hits = np.take_along_axis(cum, run_end, 1) - before
    gain = np.where(idx == run_end, run_hits * at_least / (block_end - run_start + 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = (n_pos > 0) & (n_neg > 0)
        auroc = np.where(defined, (count(rank * hit) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), np.nan)
        ap = np.where(defined, count(gain) / n_pos, np.nan)
    return auroc, ap, n_pos, n_neg


def binary_ranking_scores(positive: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(AUROC, average precision) of ``score`` for the boolean ``positive``; both classes must be present."""
    auroc, ap, _, _ = ranking_scores_by_block(np.asarray(positive)[:, None], np.asarray(score)[:, None])
    return float(auroc[0, 0]), float(ap[0, 0])


def _class_ranking_scores(y_true: np.ndarray, probs: np.ndarray) -> dict[int, Scored]:
    """One-vs-rest ((AUROC, AP), None) of every class c (``y == c`` scored by ``probs[:, c]``), or
    (None, reason) for a class that is absent or the only one present."""
    k = probs.shape[1]
    if len(y_true) == 0:
        return {c: (None, "no samples") for c in range(k)}
    auroc, ap, n_pos, n_neg = ranking_scores_by_block(y_true[:, None] == np.arange(k)[None, :], probs)
    out: dict[int, Scored] = {}
    for c in range(k):
        if n_pos[0, c] == 0 or n_neg[0, c] == 0:
            out[c] = (None, f"only {'negatives' if n_pos[0, c] == 0 else 'positives'} present ({len(y_true)} samples)")
        else:
            out[c] = ((float(auroc[0, c]), float(ap[0, c])), None)
    return out


def _combine(per_class: dict[int, Scored], y_true: np.ndarray, n_classes: int) -> Scored:
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
    pair, reason = _combine(_class_ranking_scores(y_true, probs), y_true, probs.shape[1])
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


# -- the pieces of the metrics dict ----------------------------------------------------------------------
# Each piece computes one family of figures of one split and returns a fragment of ``M`` (same keys and
# nesting); `merge_metrics` combines fragments, and `group_metrics` is their composition. A piece's
# ``"undefined"`` entry maps each of its ``None`` figures to the reason.

NO_GROUPS = "this split carries no group labels"
NO_ATTRS = "this split carries no attribute labels"


def _figures(**figures: tuple[float | None, str | None]) -> dict[str, Any]:
    """``{key: value, ..., "undefined": {key: reason, ...}}`` from ``key=(value, reason)``; a reason is
    kept only for a value that is None."""
    out: dict[str, Any] = {key: value for key, (value, _) in figures.items()}
    out["undefined"] = {key: reason or "undefined" for key, (value, reason) in figures.items() if value is None}
    return out


def check_probabilities(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, probs)`` as int64 labels and float64 probabilities (n, n_classes), validated.

    Raises `GroupRobustError` on probabilities of the wrong shape, not finite, negative, or whose
    rows do not sum to 1 (logits passed instead of softmax(logits)).
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
    return y, probs


def merge_metrics(*fragments: dict[str, Any]) -> dict[str, Any]:
    """One dict from metric fragments: nested dicts are merged key by key (a key keeps the position
    of its first appearance), any other value of a later fragment replaces an earlier one. The
    fragments are not modified."""
    out: dict[str, Any] = {}
    for fragment in fragments:
        _merge_into(out, fragment)
    return out


def _merge_into(out: dict[str, Any], fragment: dict[str, Any]) -> None:
    for key, value in fragment.items():
        if isinstance(value, dict):
            if not isinstance(out.get(key), dict):
                out[key] = {}
            _merge_into(out[key], value)
        else:
            out[key] = value


def train_weighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None, n_groups: int,
                            train_group_counts: np.ndarray | None) -> dict[str, Any]:
    """``{"train_weighted_avg_acc", "undefined"}``: the split's group accuracies weighted by the training
    group proportions ``train_group_counts`` (n_groups,), renormalised over the groups with both training
    samples and samples in the split. None (with the reason) without groups or training counts.
    Raises `GroupRobustError` when the counts do not have one entry per group."""
    if groups is None:
        return _figures(train_weighted_avg_acc=(None, NO_GROUPS))
    if train_group_counts is None:
        return _figures(train_weighted_avg_acc=(None, "training group counts were not given"))
    weights = np.asarray(train_group_counts, dtype=float)
    if len(weights) != n_groups:
        raise GroupRobustError(f"train group counts have {len(weights)} entries for {n_groups} groups; "
                               "pass the training split's group_counts() of the same dataset")
    accs, _ = group_means(np.asarray(y_true) == np.asarray(y_pred), groups, n_groups)
    use = (weights > 0) & ~np.isnan(accs)
    if not use.any():
        return _figures(train_weighted_avg_acc=(None, "no group has both training samples and samples in this split"))
    return _figures(train_weighted_avg_acc=(float((weights[use] * accs[use]).sum() / weights[use].sum()), None))


def precision_f1_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """SubpopBench's class-level precision and F1 (its ``classification_report(zero_division=0)`` figures).

    Returns ``{"macro_precision", "macro_f1", "worst_class_precision", "worst_class_f1",
    "per_class": {"<c>": {"precision", "f1"}}}``. Macro = mean over the classes present in ``y_true``
    or ``y_pred``; worst = min over the classes present in ``y_true``; a class predicted but never
    present gets precision 0; a class neither present nor predicted gets None entries. All None for
    an empty split.
    """
    y_true, y_pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    precision, f1, n_true, n_predicted = (v[0] for v in cell_precision_f1(
        y_true, y_pred, np.zeros_like(y_true), n_classes, 1))
    labels = np.flatnonzero((n_true > 0) | (n_predicted > 0))
    per_class = {}
    for c in range(n_classes):
        shown = n_true[c] > 0 or n_predicted[c] > 0
        per_class[str(c)] = {"precision": float(precision[c]) if shown else None,
                             "f1": float(f1[c]) if shown else None}
    seen = n_true > 0
    return {
        "macro_precision": float(precision[labels].mean()) if len(labels) else None,
        "macro_f1": float(f1[labels].mean()) if len(labels) else None,
        "worst_class_precision": float(precision[seen].min()) if seen.any() else None,
        "worst_class_f1": float(f1[seen].min()) if seen.any() else None,
        "per_class": per_class,
    }


def class_acc_difference(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """``{"class_acc_diff"}``: the sum over pairs of classes present of the absolute difference of their
    accuracies (SubpopBench's "minimum class difference" selection figure; 0.0 with one class)."""
    accs = [float(v) for v in group_means(np.asarray(y_true) == np.asarray(y_pred), y_true, n_classes)[0]
            if not np.isnan(v)]
    return {"class_acc_diff": float(sum(abs(a - b) for i, a in enumerate(accs) for b in accs[i + 1:]))}


def ranking_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """AUROC and AUPRC overall and one-vs-rest per class, from class probabilities (n, n_classes).

    Returns ``{"auroc", "auprc", "per_class": {"<c>": {"auroc"[, "auroc_undefined"]}}, "undefined"}``.
    Overall: binary, the scores of class 1; multiclass, the mean over the classes present (see
    `ranking_score`). A class absent or the only one present gets ``auroc`` None and its reason.
    """
    return _ranking_metrics(*check_probabilities(y_true, probs))


def _ranking_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    class_scores = _class_ranking_scores(y, probs)
    per_class: dict[str, dict[str, Any]] = {}
    for c, (pair, reason) in class_scores.items():
        per_class[str(c)] = {"auroc": None if pair is None else pair[0]}
        if reason:
            per_class[str(c)]["auroc_undefined"] = reason
    pair, reason = _combine(class_scores, y, probs.shape[1])
    return {**_figures(auroc=(None if pair is None else pair[0], reason),
                       auprc=(None if pair is None else pair[1], reason)), "per_class": per_class}


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """``{"ece", "ece_bins"}``: top-label `expected_calibration_error` with ``n_bins`` bins (None when empty)."""
    y, probs = check_probabilities(y_true, probs)
    return _calibration_metrics(y, probs, n_bins)


def _calibration_metrics(y: np.ndarray, probs: np.ndarray, n_bins: int) -> dict[str, Any]:
    return {"ece": expected_calibration_error(y, probs, n_bins), "ece_bins": n_bins}


def attribute_metrics(y_true: np.ndarray, probs: np.ndarray, attrs: np.ndarray | None,
                      n_attrs: int | None) -> dict[str, Any]:
    """Accuracy and AUROC within each attribute value (SubpopBench's ``per_attribute``) and their worst.

    Returns ``{"per_attr": {"<a>": {"name", "acc", "n", "auroc"[, "auroc_undefined"]}}, "worst_attr_auroc",
    "undefined"}``; ``per_attr`` is None without attributes. AUROC: binary, of class 1; multiclass,
    the one-vs-rest mean over the classes present in the subset; None for a subset of one class.
    """
    return _attribute_metrics(*check_probabilities(y_true, probs), attrs, n_attrs)


def _attribute_metrics(y: np.ndarray, probs: np.ndarray, attrs: np.ndarray | None, n_attrs: int | None
                       ) -> dict[str, Any]:
    if attrs is None or not n_attrs:
        return {"per_attr": None, **_figures(worst_attr_auroc=(None, NO_ATTRS))}
    attrs = np.asarray(attrs).astype(np.int64)
    correct = probs.argmax(axis=1) == y
    table = _accuracy_table(correct, attrs, [f"a={a}" for a in range(n_attrs)])
    k = probs.shape[1]
    counts = np.bincount(attrs * k + y, minlength=n_attrs * k).reshape(n_attrs, k)
    classes = np.array([1] if k == 2 else range(k))
    aucs = ranking_scores_by_block(y[:, None] == classes[None, :], probs[:, classes], attrs, n_attrs)[0].T
    for a, entry in enumerate(table.values()):
        if (counts[a] > 0).sum() < 2:
            entry["auroc"] = None
            entry["auroc_undefined"] = f"only one class present ({entry['n']} samples)" if entry["n"] else "no samples"
        else:
            entry["auroc"] = float(np.nanmean(aucs[:, a]))
    return {"per_attr": table, **_figures(worst_attr_auroc=_worst(table, "auroc", "attribute value"))}


def group_cell_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None, n_groups: int | None,
                       n_classes: int, attrs: np.ndarray | None, n_attrs: int | None) -> dict[str, Any]:
    """Precision and F1 of each (class, attribute) group and their worst, from hard predictions.

    Group g = (y, a) has precision P(Y = y | prediction y, A = a) and recall acc(g) (see
    `cell_precision_f1`). Returns ``{"per_group": {"<g>": {"precision", "f1"}}, "worst_group_precision",
    "worst_group_f1", "undefined"}``; groups with no sample get None and stay out of the worst figures.
    Defined only when ``groups`` are the (class, attribute) crossing of ``attrs`` (`Grouper.is_cross`),
    otherwise both figures are None with the reason and there is no ``per_group``.
    """
    y, pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    if attrs is not None and n_attrs:
        attrs = np.asarray(attrs).astype(np.int64)
    grouper = Grouper(n_classes, n_attrs) if attrs is not None and n_attrs else None
    if groups is None or grouper is None or n_groups != grouper.n_groups or not grouper.is_cross(groups, y, attrs):
        reason = NO_GROUPS if groups is None else "groups are not (class, attribute) pairs y * n_attrs + a"
        return _figures(worst_group_precision=(None, reason), worst_group_f1=(None, reason))
    # group g = (y, a) is cell [a, y]: transposed and flattened, the cells come in group-id order
    precision, f1, n_true, _ = (v.T.reshape(-1) for v in cell_precision_f1(y, pred, attrs, n_classes, n_attrs))
    per_group = {str(g): {"precision": float(precision[g]), "f1": float(f1[g])} if n_true[g] > 0
                 else {"precision": None, "f1": None} for g in range(grouper.n_groups)}
    return {"per_group": per_group, **_figures(worst_group_precision=_worst(per_group, "precision", "group"),
                                               worst_group_f1=_worst(per_group, "f1", "group"))}


def eval_group_metrics(y_true: np.ndarray, probs: np.ndarray, eval_groups: np.ndarray,
                       eval_group_names: Sequence[str] | None = None) -> dict[str, Any]:
    """WILDS CivilComments worst-group accuracy over overlapping evaluation groups, and subgroup AUROC.

    WILDS (wilds/datasets/civilcomments_dataset.py, ``CivilCommentsDataset.eval``) crosses each identity
    with the label (groupers over ``[identity, 'y']``) and takes the minimum accuracy over the cells where
    the identity is present: one cell per (evaluation group, class). Empty cells are left out (WILDS
    counts an empty cell as accuracy 0, which never happens on its data). Returns ``{"eval_groups":
    {"per_group": {"<j>": {"auroc"[, "auroc_undefined"]}}, "wilds_worst_group_acc", "per_group_class":
    {"<cell>": {"name", "acc", "n"}}, "worst_group_auroc", "undefined"}}``: each group's AUROC is Borkan
    et al.'s "subgroup AUC". The accuracy figures of the groups themselves come from `group_accuracy_metrics`.
    """
    return _eval_group_metrics(*check_probabilities(y_true, probs), eval_groups, eval_group_names)


def _eval_group_metrics(y: np.ndarray, probs: np.ndarray, eval_groups: np.ndarray,
                        eval_group_names: Sequence[str] | None) -> dict[str, Any]:
    eval_groups = np.asarray(eval_groups, dtype=bool)
    m, n_classes = eval_groups.shape[1], probs.shape[1]
    names = list(eval_group_names) if eval_group_names is not None else [f"eval{j}" for j in range(m)]
    correct = probs.argmax(axis=1) == y
    cells = np.concatenate([eval_groups & (y == c)[:, None] for c in range(n_classes)], axis=1)
    cell_table = _accuracy_table(correct, cells, [f"{name},y={c}" for c in range(n_classes) for name in names])
    per_group: dict[str, dict[str, Any]] = {}
    for j in range(m):
        mask = eval_groups[:, j]
        auroc, reason = ranking_score(y[mask], probs[mask])
        per_group[str(j)] = {"auroc": auroc, **({"auroc_undefined": reason} if reason else {})}
    worst_auroc, reason = _worst(per_group, "auroc", "evaluation group (each holds one class only)")
    return {"eval_groups": {
        "per_group": per_group,
        "wilds_worst_group_acc": _summaries(cell_table)[0],
        "per_group_class": cell_table,
        "worst_group_auroc": worst_auroc,
        "undefined": {"worst_group_auroc": reason} if reason else {},
    }}


def _worst(table: dict[str, dict[str, Any]], key: str, what: str) -> tuple[float | None, str | None]:
    worst, _ = _summaries(table, key)
    return (worst, None) if worst is not None else (None, f"{key} is undefined for every {what}")


# -- the whole dict --------------------------------------------------------------------------------------

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
    It is the `merge_metrics` of the pieces `group_accuracy_metrics`, `train_weighted_accuracy`,
    `precision_f1_metrics`, `class_acc_difference`, `ranking_metrics`, `calibration_metrics`,
    `attribute_metrics`, `group_cell_metrics` and `eval_group_metrics`.
    Raises `GroupRobustError` on probabilities that are not finite or of the wrong shape.
    """
    y, probs = check_probabilities(y_true, probs)
    if groups is not None and n_groups is None:
        raise GroupRobustError("n_groups is required with groups; pass the dataset's n_groups")
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    accuracy = group_accuracy_metrics(y, pred, groups, n_groups or 0, n_classes, group_names, eval_groups,
                                      eval_group_names)
    # SubpopBench's "adjusted accuracy": the unweighted mean of per-group accuracies over the groups present
    # in the split (subpopbench/utils/eval_helper.py, eval_metrics: res['adjusted_accuracy']), which is
    # our group_balanced_acc.
    adjusted = _figures(adjusted_acc=(accuracy["group_balanced_acc"], None if groups is not None else NO_GROUPS))
    fragments = [
        accuracy, adjusted,
        train_weighted_accuracy(y, pred, groups, n_groups or 0, train_group_counts),
        precision_f1_metrics(y, pred, n_classes),
        class_acc_difference(y, pred, n_classes),
        _ranking_metrics(y, probs),  # the pieces on probabilities, without checking them again
        _calibration_metrics(y, probs, ece_bins),
        _attribute_metrics(y, probs, attrs, n_attrs),
        group_cell_metrics(y, pred, groups, n_groups, n_classes, attrs, n_attrs),
    ]
    if eval_groups is not None:
        fragments.append(_eval_group_metrics(y, probs, eval_groups, eval_group_names))
    undefined: dict[str, str] = {}
    for fragment in fragments:
        undefined.update(fragment.get("undefined", {}))
    out = merge_metrics(*({k: v for k, v in f.items() if k != "undefined"} for f in fragments))
    for key in ("worst_group_acc", "group_balanced_acc"):
        if out[key] is None:
            undefined[key] = NO_GROUPS if groups is None else "every group is empty in this split"
    out["undefined"] = undefined
    return out


def dataset_metrics(dataset: "GroupDataset", probs: np.ndarray, train_group_counts: np.ndarray | None = None,
                    ece_bins: int = ECE_BINS) -> dict[str, Any]:
    """`group_metrics` of ``probs`` (n, n_classes) on a `GroupDataset`, using the labels it carries."""
    return group_metrics(dataset.y, probs, dataset.g, dataset.n_groups, dataset.group_names, dataset.eval_groups,
                         dataset.eval_group_names, dataset.a, dataset.n_attrs, train_group_counts, ece_bins)
