import numpy as np

from grouprobust.metrics import group_accuracy_metrics


def test_hand_computed_group_metrics():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 0, 0])
    g = np.array([0, 0, 1, 2, 3, 3])  # group 1 and 3 contain the errors
    m = group_accuracy_metrics(y, pred, g, n_groups=5, n_classes=2)
    assert m["avg_acc"] == 3 / 6
    assert m["per_group"]["0"] == {"name": "0", "acc": 1.0, "n": 2}
    assert m["per_group"]["1"]["acc"] == 0.0
    assert m["per_group"]["3"]["acc"] == 0.0
    assert m["per_group"]["4"] == {"name": "4", "acc": None, "n": 0}  # empty: reported, not dropped
    assert m["empty_groups"] == ["4"]
    assert m["worst_group_acc"] == 0.0
    assert m["group_balanced_acc"] == (1 + 0 + 1 + 0) / 4
    assert m["worst_class_acc"] == 1 / 3
    assert m["balanced_acc"] == (2 / 3 + 1 / 3) / 2


def test_overlapping_eval_groups():
    y = np.array([0, 1, 1, 0])
    pred = np.array([0, 1, 0, 0])
    eg = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=bool)
    m = group_accuracy_metrics(y, pred, None, n_groups=4, n_classes=2, eval_groups=eg, eval_group_names=["m", "f"])
    assert m["worst_group_acc"] is None
    assert m["eval_groups"]["per_group"]["0"]["acc"] == 1.0
    assert m["eval_groups"]["per_group"]["1"]["acc"] == 0.5
    assert m["eval_groups"]["worst_group_acc"] == 0.5
