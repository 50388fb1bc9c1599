"""`group_metrics`: every figure on hand-computed cases, against scikit-learn where it has the metric,
and the degenerate cases (one class in a subset, empty groups) reported without NaN or crash."""

import json

import numpy as np
import pytest
from sklearn.metrics import (average_precision_score, balanced_accuracy_score, precision_recall_fscore_support,
                             roc_auc_score)

from grouprobust.errors import GroupRobustError
from grouprobust.metrics import (binary_ranking_scores, cell_precision_f1, expected_calibration_error,
                                 group_accuracy_metrics, group_metrics, ranking_scores_by_block)

# A binary case small enough to check by hand (the numbers in the comments are worked out in full).
Y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
A = np.array([0, 0, 1, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.45, 0.7])  # P(y = 1); predictions [0,1,0,1,0,1,0,1]
PROBS = np.stack([1 - P1, P1], axis=1)
G = Y * 2 + A  # groups (y, a): [0, 0, 1, 2, 3, 3, 1, 3]


def _hand_case(**kw):
    return group_metrics(Y, PROBS, G, 4, attrs=A, n_attrs=2, **kw)


def test_accuracies_on_hand_computed_case():
    m = _hand_case()
    # correct = [1, 0, 1, 1, 0, 1, 1, 1]
    assert m["avg_acc"] == pytest.approx(6 / 8)
    accs = {g: v["acc"] for g, v in m["per_group"].items()}
    assert accs == pytest.approx({"0": 0.5, "1": 1.0, "2": 1.0, "3": 2 / 3})
    assert m["worst_group_acc"] == pytest.approx(0.5)
    # unweighted mean over the groups present
    assert m["group_balanced_acc"] == pytest.approx((0.5 + 1 + 1 + 2 / 3) / 4)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(Y, PROBS.argmax(1)))
    assert m["class_acc_diff"] == pytest.approx(0.0)  # both classes at 3/4


def test_train_proportion_weighted_average_on_constructed_case():
    # training groups 60% / 20% / 10% / 10%: (6 * .5 + 2 * 1 + 1 * 1 + 1 * 2/3) / 10
    m = _hand_case(train_group_counts=np.array([6, 2, 1, 1]))
    assert m["train_weighted_avg_acc"] == pytest.approx((3 + 2 + 1 + 2 / 3) / 10)
    assert m["avg_acc"] == pytest.approx(0.75)  # the plain average is kept beside it
    # a group empty in training gets no weight; a group empty in the split is renormalised away
    m = group_metrics(Y, PROBS, G, 5, attrs=None, train_group_counts=np.array([0, 2, 1, 1, 5]))
    assert m["train_weighted_avg_acc"] == pytest.approx((2 * 1 + 1 * 1 + 1 * 2 / 3) / 4)
    assert _hand_case()["train_weighted_avg_acc"] is None
    assert _hand_case()["undefined"]["train_weighted_avg_acc"] == "training group counts were not given"
    with pytest.raises(GroupRobustError, match="train group counts"):
        _hand_case(train_group_counts=np.array([1, 2, 3]))


def test_class_precision_f1_match_sklearn():
    m = _hand_case()
    pred = PROBS.argmax(1)
    prec, _, f1, _ = precision_recall_fscore_support(Y, pred, zero_division=0)
    assert m["macro_precision"] == pytest.approx(prec.mean()) == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(f1.mean())
    assert m["worst_class_precision"] == pytest.approx(prec.min())
    assert [m["per_class"][c]["precision"] for c in "01"] == pytest.approx(list(prec))


def test_precision_f1_equal_sklearn_with_absent_and_unpredicted_classes():
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 2, 4], 200)  # class 3 never present
    pred = np.where(rng.random(200) < 0.6, y, rng.choice([1, 2, 3], 200))  # 3 predicted, 0 rarely
    pred[y == 4] = 0  # class 4 never predicted
    a = rng.integers(0, 3, 200)
    probs = np.eye(5)[pred] * 0.6 + 0.08
    m = group_metrics(y, probs, y * 3 + a, 15, attrs=a, n_attrs=3)
    labels = np.union1d(y, pred)  # what SubpopBench's classification_report averages over
    prec, _, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert m["macro_precision"] == pytest.approx(prec.mean()) and m["macro_f1"] == pytest.approx(f1.mean())
    seen = np.isin(labels, y)
    assert m["worst_class_precision"] == pytest.approx(prec[seen].min()) == 0.0  # class 4 is never predicted
    assert m["per_class"]["3"]["n"] == 0 and m["per_class"]["3"]["precision"] == 0.0
    cell_p, cell_f, _, _ = cell_precision_f1(y, pred, a, 5, 3)
    for j in range(3):
        p, _, f, _ = precision_recall_fscore_support(y[a == j], pred[a == j], labels=range(5), zero_division=0)
        assert cell_p[j] == pytest.approx(p) and cell_f[j] == pytest.approx(f)
        for c in (0, 1, 2, 4):
            assert m["per_group"][str(c * 3 + j)]["precision"] == pytest.approx(p[c])
    assert m["per_group"][str(3 * 3)]["precision"] is None  # group (3, 0) is empty


def test_group_precision_and_f1_by_hand():
    m = _hand_case()
    # attribute 0: samples 0,1,3; attribute 1: samples 2,4,5,6,7
    prec = {g: v["precision"] for g, v in m["per_group"].items()}
    f1 = {g: v["f1"] for g, v in m["per_group"].items()}
    assert prec == pytest.approx({"0": 1.0, "1": 2 / 3, "2": 0.5, "3": 1.0})
    assert f1 == pytest.approx({"0": 2 / 3, "1": 0.8, "2": 2 / 3, "3": 0.8})
    assert m["worst_group_precision"] == pytest.approx(0.5)
    assert m["worst_group_f1"] == pytest.approx(2 / 3)
    # the same figure is sklearn's class precision restricted to one attribute value
    mask = A == 0
    p, _, f, _ = precision_recall_fscore_support(Y[mask], PROBS.argmax(1)[mask], labels=[0, 1], zero_division=0)
    assert [prec["0"], prec["2"]] == pytest.approx(list(p))
    assert [f1["0"], f1["2"]] == pytest.approx(list(f))


def test_auroc_auprc_by_hand_and_sklearn():
    m = _hand_case()
    # positives score .8 .4 .9 .7, negatives .1 .6 .3 .45: 14 of 16 pairs ordered
    assert m["auroc"] == pytest.approx(14 / 16) == pytest.approx(roc_auc_score(Y, P1))
    # ranked: P P P N N P N N -> AP = (1 + 1 + 1 + 4/6) / 4
    assert m["auprc"] == pytest.approx((3 + 4 / 6) / 4) == pytest.approx(average_precision_score(Y, P1))
    # attribute 0: positive .8 vs .1, .6 -> 1; attribute 1: positives .4 .9 .7 vs .3 .45 -> 5/6
    assert m["per_attr"]["0"]["auroc"] == pytest.approx(1.0)
    assert m["per_attr"]["1"]["auroc"] == pytest.approx(5 / 6)
    assert m["worst_attr_auroc"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decimals", [1, 3, 8])  # 1: many ties, 8: almost none
def test_binary_ranking_scores_equal_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[:2] = [True, False]
    score = np.round(rng.random(n) + rng.uniform(0, 1) * y, decimals)
    auroc, ap = binary_ranking_scores(y, score)
    assert auroc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(y, score), abs=1e-12)


def test_multiclass_ovr_auroc_and_auprc_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = group_metrics(y, probs)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["auprc"] == pytest.approx(average_precision_score(np.eye(4)[y], probs, average="macro"))
    for c in range(4):
        assert m["per_class"][str(c)]["auroc"] == pytest.approx(roc_auc_score(y == c, probs[:, c]))


def test_per_attribute_auroc_equals_sklearn_on_each_subset():
    rng = np.random.default_rng(2)
    n, k, m = 600, 3, 4
    y, a = rng.integers(0, k, n), rng.integers(0, m, n)
    logits = np.round(rng.normal(size=(n, k)) + np.eye(k)[y] * (1 + a[:, None] / 2), 1)  # ties included
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    table = group_metrics(y, probs, y * m + a, k * m, attrs=a, n_attrs=m)["per_attr"]
    for j in range(m):
        mask = a == j
        expected = roc_auc_score(y[mask], probs[mask], multi_class="ovr", average="macro")
        assert table[str(j)]["auroc"] == pytest.approx(expected, abs=1e-12)
    auc, ap, n_pos, n_neg = ranking_scores_by_block(y[:, None] == np.arange(k), probs, a, m + 1)  # block m empty
    for j in range(m):
        for c in range(k):
            mask = a == j
            assert auc[j, c] == pytest.approx(roc_auc_score(y[mask] == c, probs[mask, c]), abs=1e-12)
            assert ap[j, c] == pytest.approx(average_precision_score(y[mask] == c, probs[mask, c]), abs=1e-12)
    assert np.isnan(auc[m]).all() and np.isnan(ap[m]).all() and (n_pos[m] == 0).all() and (n_neg[m] == 0).all()


def test_ece_hand_computed():
    y = np.array([1, 0, 0, 1, 1])
    p1 = np.array([0.95, 0.95, 0.35, 0.65, 0.45])
    probs = np.stack([1 - p1, p1], 1)
    # top-label confidences .95 .95 .65 .65 .55, correct 1 0 1 1 0
    # bins: {.95, .95}: |.5 - .95| * 2/5; {.65, .65}: |1 - .65| * 2/5; {.55}: |0 - .55| * 1/5
    assert expected_calibration_error(y, probs, 10) == pytest.approx(0.18 + 0.14 + 0.11)
    assert expected_calibration_error(y, probs, 15) == pytest.approx(0.43)
    assert expected_calibration_error(y, probs, 1) == pytest.approx(abs(3 / 5 - 3.75 / 5))
    m = group_metrics(y, probs)
    assert m["ece"] == pytest.approx(0.43) and m["ece_bins"] == 15
    confident = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 1]), confident) == 0.0


def test_attribute_with_one_class_gives_none_with_reason():
    y = np.array([0, 0, 1, 1, 1])
    a = np.array([0, 0, 0, 1, 1])  # attribute 1 holds class 1 only
    p1 = np.array([0.2, 0.7, 0.6, 0.9, 0.8])
    m = group_metrics(y, np.stack([1 - p1, p1], 1), y * 2 + a, 4, attrs=a, n_attrs=2)
    assert m["per_attr"]["1"]["auroc"] is None
    assert m["per_attr"]["1"]["auroc_undefined"] == "only one class present (2 samples)"
    assert m["worst_attr_auroc"] == pytest.approx(0.5)  # attribute 0: .6 vs .2, .7
    # the (y=0, a=1) group is empty: reported with n = 0, left out of every worst figure
    assert m["per_group"]["1"] == {"name": "1", "acc": None, "n": 0, "precision": None, "f1": None}
    assert m["empty_groups"] == ["1"]
    json.dumps(m, allow_nan=False)


def test_split_with_one_class_only_is_reported_not_nan():
    y = np.zeros(4, dtype=int)
    p1 = np.array([0.1, 0.2, 0.7, 0.3])
    m = group_metrics(y, np.stack([1 - p1, p1], 1), y * 2 + np.array([0, 1, 0, 1]), 4,
                      attrs=np.array([0, 1, 0, 1]), n_attrs=2)
    for key in ("auroc", "auprc", "worst_attr_auroc"):
        assert m[key] is None and m["undefined"][key]
    assert m["per_class"]["1"]["precision"] == 0.0  # predicted once, never right
    assert m["worst_class_precision"] == 1.0  # only class 0 is present in y
    assert m["worst_group_acc"] == 0.5
    text = json.dumps(m, allow_nan=False)
    assert "NaN" not in text


def test_no_group_labels_reports_reasons():
    m = group_metrics(Y, PROBS)
    for key in ("worst_group_acc", "group_balanced_acc", "train_weighted_avg_acc", "worst_group_precision",
                "worst_attr_auroc"):
        assert m[key] is None
        assert "no group labels" in m["undefined"][key] or "no attribute labels" in m["undefined"][key]
    assert m["auroc"] == pytest.approx(14 / 16)


def test_groups_that_are_not_class_attribute_cells_get_no_group_precision():
    m = group_metrics(Y, PROBS, np.array([0, 1, 0, 1, 0, 1, 0, 1]), 4, attrs=A, n_attrs=2)
    assert m["worst_group_precision"] is None
    assert "not (class, attribute) pairs" in m["undefined"]["worst_group_precision"]
    assert m["worst_attr_auroc"] is not None


def test_wilds_worst_group_over_overlapping_groups():
    # identities "m" and "f" overlap; WILDS takes the worst (identity, label) cell
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0])
    eg = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=bool)
    probs = np.eye(2)[pred] * 0.8 + 0.1
    m = group_metrics(y, probs, eval_groups=eg, eval_group_names=["m", "f"])
    cells = {v["name"]: (v["acc"], v["n"]) for v in m["eval_groups"]["per_group_class"].values()}
    # m,y=0: samples 0,1 -> 1/2; f,y=0: 1,4 -> 1/2; m,y=1: 2 -> 1; f,y=1: 3,5 -> 1/2
    assert cells == {"m,y=0": (0.5, 2), "f,y=0": (0.5, 2), "m,y=1": (1.0, 1), "f,y=1": (0.5, 2)}
    assert m["eval_groups"]["wilds_worst_group_acc"] == 0.5
    assert m["eval_groups"]["worst_group_acc"] == pytest.approx(0.5)  # f: samples 1,3,4,5 -> 2/4
    # subgroup AUROC: m holds scores .1 .9 (y=0) and .9 (y=1) -> 0.75; f: .9 .1 (y=0) vs .9 .1 (y=1) -> 0.5
    assert m["eval_groups"]["per_group"]["0"]["auroc"] == pytest.approx(0.75)
    assert m["eval_groups"]["worst_group_auroc"] == pytest.approx(0.5)
    crossed = group_metrics(y, probs, eval_groups=np.concatenate([eg & (y == 0)[:, None], eg & (y == 1)[:, None]], 1))
    assert crossed["eval_groups"]["worst_group_auroc"] is None  # label-crossed groups hold one class each
    assert "one class only" in crossed["eval_groups"]["undefined"]["worst_group_auroc"]
    assert crossed["eval_groups"]["wilds_worst_group_acc"] == m["eval_groups"]["wilds_worst_group_acc"]
    # a cell that is empty is left out rather than counted as 0
    m = group_metrics(y[:3], probs[:3], eval_groups=eg[:3], eval_group_names=["m", "f"])
    assert m["eval_groups"]["per_group_class"]["3"]["n"] == 0
    assert m["eval_groups"]["wilds_worst_group_acc"] == 0.0  # f,y=0 holds sample 1, wrong


def test_bad_probabilities_are_refused():
    with pytest.raises(GroupRobustError, match="NaN"):
        group_metrics(Y, np.full((8, 2), np.nan))
    with pytest.raises(GroupRobustError, match="shape"):
        group_metrics(Y, P1)
    with pytest.raises(GroupRobustError, match="sum to 1"):
        group_metrics(Y, PROBS * 3)


def test_group_accuracy_metrics_alone_on_hand_computed_case():
    acc = group_accuracy_metrics(Y, PROBS.argmax(1), G, 4, 2)
    # correct = [1, 0, 1, 1, 0, 1, 1, 1]; groups [0, 0, 1, 2, 3, 3, 1, 3]; both classes right 3 of 4
    assert acc["avg_acc"] == pytest.approx(6 / 8)
    assert acc["worst_group_acc"] == pytest.approx(0.5)
    assert acc["group_balanced_acc"] == pytest.approx((0.5 + 1 + 1 + 2 / 3) / 4)
    assert acc["worst_class_acc"] == pytest.approx(0.75) and acc["balanced_acc"] == pytest.approx(0.75)
