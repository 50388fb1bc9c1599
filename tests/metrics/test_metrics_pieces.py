"""The pieces of `group_metrics`, each called alone, on cases worked out by hand."""

import numpy as np
import pytest

from grouprobust.errors import GroupRobustError
from grouprobust.metrics import (attribute_metrics, calibration_metrics, check_probabilities, class_acc_difference,
                                 eval_group_metrics, group_cell_metrics, group_means, merge_metrics,
                                 precision_f1_metrics, ranking_metrics, train_weighted_accuracy)

Y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
A = np.array([0, 0, 1, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.45, 0.7])
PROBS = np.stack([1 - P1, P1], axis=1)
PRED = np.array([0, 1, 0, 1, 0, 1, 0, 1])
G = Y * 2 + A


def test_ranking_metrics_alone():
    m = ranking_metrics(Y, PROBS)
    # positives .8 .4 .9 .7 against negatives .1 .6 .3 .45: 14 of 16 pairs ordered
    assert m["auroc"] == pytest.approx(14 / 16)
    assert m["per_class"]["1"]["auroc"] == pytest.approx(14 / 16)
    assert m["undefined"] == {}
    one_class = ranking_metrics(np.zeros(3, int), PROBS[:3])
    assert one_class["auroc"] is None and one_class["auprc"] is None
    assert "only negatives" in one_class["undefined"]["auroc"]


def test_calibration_metrics_alone():
    probs = np.array([[0.8, 0.2]] * 4)
    m = calibration_metrics(np.array([0, 0, 0, 1]), probs)
    assert m["ece"] == pytest.approx(0.05)  # one bin: accuracy 3/4, confidence 0.8
    assert m["ece_bins"] == 15
    assert calibration_metrics(np.array([], int), np.zeros((0, 2)), n_bins=10) == {"ece": None, "ece_bins": 10}


def test_attribute_metrics_alone():
    m = attribute_metrics(Y, PROBS, A, 2)
    # a=0: y 0 0 1 scored .1 .6 .8 -> AUROC 1; a=1: negatives .3 .45, positives .4 .9 .7 -> 5/6
    assert m["per_attr"]["0"]["auroc"] == pytest.approx(1.0)
    assert m["per_attr"]["1"]["auroc"] == pytest.approx(5 / 6)
    assert m["per_attr"]["0"]["acc"] == pytest.approx(2 / 3) and m["per_attr"]["1"]["acc"] == pytest.approx(4 / 5)
    assert m["worst_attr_auroc"] == pytest.approx(5 / 6)
    none = attribute_metrics(Y, PROBS, None, None)
    assert none["per_attr"] is None and "no attribute labels" in none["undefined"]["worst_attr_auroc"]


def test_group_cell_metrics_alone():
    m = group_cell_metrics(Y, PRED, G, 4, 2, A, 2)
    # (y, a): precision of class y among attribute-a samples predicted y; F1 with recall acc(g)
    assert {g: v["precision"] for g, v in m["per_group"].items()} == pytest.approx(
        {"0": 1.0, "1": 2 / 3, "2": 0.5, "3": 1.0})
    assert {g: v["f1"] for g, v in m["per_group"].items()} == pytest.approx({"0": 2 / 3, "1": 0.8, "2": 2 / 3, "3": 0.8})
    assert m["worst_group_precision"] == pytest.approx(0.5) and m["worst_group_f1"] == pytest.approx(2 / 3)
    own = group_cell_metrics(Y, PRED, np.array([0, 1, 0, 1, 0, 1, 0, 1]), 4, 2, A, 2)
    assert own["worst_group_precision"] is None and "per_group" not in own
    assert "not (class, attribute) pairs" in own["undefined"]["worst_group_f1"]


def test_accuracy_side_pieces_alone():
    m = train_weighted_accuracy(Y, PRED, G, 4, np.array([6, 2, 1, 1]))
    assert m["train_weighted_avg_acc"] == pytest.approx((6 * 0.5 + 2 * 1 + 1 * 1 + 1 * 2 / 3) / 10)
    assert train_weighted_accuracy(Y, PRED, None, 4, None)["undefined"]["train_weighted_avg_acc"] == \
        "this split carries no group labels"
    with pytest.raises(GroupRobustError, match="3 entries for 4 groups"):
        train_weighted_accuracy(Y, PRED, G, 4, np.array([1, 2, 3]))
    # class accuracies 1, 1/2, 0 -> |1 - 1/2| + |1 - 0| + |1/2 - 0|
    diff = class_acc_difference(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 0, 0, 0]), 3)
    assert diff == {"class_acc_diff": pytest.approx(2.0)}
    p = precision_f1_metrics(Y, PRED, 2)
    assert p["macro_precision"] == pytest.approx(0.75)  # class 0: 3 of 4 predicted right, class 1: 3 of 4
    assert p["per_class"]["0"]["precision"] == pytest.approx(0.75)


def test_eval_group_metrics_alone():
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0])
    eg = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=bool)
    m = eval_group_metrics(y, np.eye(2)[pred] * 0.8 + 0.1, eg, ["m", "f"])["eval_groups"]
    assert m["wilds_worst_group_acc"] == 0.5
    assert m["per_group_class"]["2"] == {"name": "m,y=1", "acc": 1.0, "n": 1}
    assert m["per_group"]["0"]["auroc"] == pytest.approx(0.75)
    assert m["worst_group_auroc"] == pytest.approx(0.5)


def test_merge_metrics_merges_nested_entries_in_place_of_first_appearance():
    a = {"x": 1, "per": {"0": {"acc": 0.5}}, "y": None}
    b = {"z": 2, "per": {"0": {"f1": 0.1}, "1": {"f1": 0.2}}, "y": {"k": 1}}
    merged = merge_metrics(a, b)
    assert list(merged) == ["x", "per", "y", "z"]
    assert merged["per"] == {"0": {"acc": 0.5, "f1": 0.1}, "1": {"f1": 0.2}}
    assert merged["y"] == {"k": 1}
    assert a == {"x": 1, "per": {"0": {"acc": 0.5}}, "y": None}  # inputs untouched


def test_pieces_refuse_bad_probabilities():
    for piece in (ranking_metrics, calibration_metrics):
        with pytest.raises(GroupRobustError, match="sum to 1"):
            piece(Y, PROBS * 3)
    with pytest.raises(GroupRobustError, match="shape"):
        check_probabilities(Y, P1)


def test_group_means_of_ids_and_of_a_membership_matrix_agree_and_leave_empty_groups_out():
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 2.0])
    ids = np.array([0, 0, 2, 2, 2, -1])  # group 1 is empty; -1 is in no group
    means, counts = group_means(values, ids, 3)
    np.testing.assert_allclose(means[[0, 2]], [0.5, 2.5 / 3])
    assert np.isnan(means[1]) and counts.tolist() == [2, 0, 3]
    members = ids[:, None] == np.arange(3)[None, :]
    again, again_counts = group_means(values, members, 3)
    np.testing.assert_array_equal(again, means)
    assert again_counts.tolist() == counts.tolist()

