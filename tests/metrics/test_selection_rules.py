"""Model-selection rules: each picks the epoch it should on a made-up history, oracle rules are marked,
and rules needing labels the regime or the split does not give are refused with one line."""

import json

import numpy as np
import pytest

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.selection import (SELECTION_RULES, check_rule_for_regime, check_rule_for_split, get_rule,
                                   rule_key, rule_value, select_best_index)

TINY = {"n": 300, "n_val": 150, "n_test": 300}


def pick(history, rule):
    """What training, the last-layer estimators and sweep reports do: `select_best_index` over `rule_key`."""
    return select_best_index([rule_key(entry, rule) for entry in history])


def _entry(epoch, **val):
    """A history entry whose val and test figures default to 0.5 (class_acc_diff 0.5 too)."""
    test = val.pop("test", {})
    base = {r.metric.split(".")[-1]: 0.5 for r in SELECTION_RULES.values()}
    split = lambda over: {**base, **over, "eval_groups": {"wilds_worst_group_acc": over.get("wilds", 0.5)}}
    return {"epoch": epoch, "metrics": {"val": split(val), "test": split(test)}}


def test_each_rule_picks_the_epoch_where_its_figure_is_best():
    rules = list(SELECTION_RULES.values())
    history = []
    for i, rule in enumerate(rules):
        best = 0.9 if rule.higher_is_better else 0.1
        key = "wilds" if rule.metric.startswith("eval_groups.") else rule.metric
        history.append(_entry(i + 1, **({key: best} if rule.split == "val" else {"test": {key: best}})))
    history.insert(0, {"epoch": 0, "train_loss": 1.0})  # an epoch without evaluation is skipped
    for i, rule in enumerate(rules):
        assert history[pick(history, rule)]["epoch"] == i + 1, rule.name


def test_rules_disagree_on_a_realistic_history():
    history = [
        _entry(1, avg_acc=0.95, worst_group_acc=0.20, test={"avg_acc": 0.90, "worst_group_acc": 0.25}),
        _entry(2, avg_acc=0.85, worst_group_acc=0.70, test={"avg_acc": 0.80, "worst_group_acc": 0.60}),
        _entry(3, avg_acc=0.80, worst_group_acc=0.65, test={"avg_acc": 0.78, "worst_group_acc": 0.72}),
    ]
    picks = {name: history[pick(history, get_rule(name))]["epoch"]
             for name in ("val_worst_group_acc", "val_avg_acc", "oracle_test_worst_group_acc", "oracle_test_avg_acc")}
    assert picks == {"val_worst_group_acc": 2, "val_avg_acc": 1, "oracle_test_worst_group_acc": 3,
                     "oracle_test_avg_acc": 1}


def test_ties_go_to_higher_average_then_to_the_earliest():
    history = [_entry(1, worst_group_acc=0.7, avg_acc=0.8), _entry(2, worst_group_acc=0.7, avg_acc=0.9),
               _entry(3, worst_group_acc=0.7, avg_acc=0.9)]
    assert pick(history, get_rule("val_worst_group_acc")) == 1


def test_minimising_rule_and_dotted_metric():
    history = [_entry(1, class_acc_diff=0.3), _entry(2, class_acc_diff=0.05), _entry(3, class_acc_diff=0.2)]
    assert pick(history, get_rule("val_min_class_diff")) == 1
    entry = _entry(1, wilds=0.42)
    assert rule_value(entry, get_rule("val_wilds_worst_group_acc")) == 0.42


def test_no_value_anywhere_selects_nothing():
    rule = get_rule("val_worst_group_acc")
    history = [{"epoch": 1, "metrics": {"val": {"worst_group_acc": None, "avg_acc": 0.5}}},
               {"epoch": 2, "metrics": {"val": {"worst_group_acc": float("nan"), "avg_acc": 0.9}}},
               {"epoch": 3, "train_loss": 0.1}]
    assert [rule_key(e, rule) for e in history] == [None, None, None]
    assert pick(history, rule) is None
    history.append({"epoch": 4, "metrics": {"val": {"worst_group_acc": 0.1, "avg_acc": None}}})
    assert pick(history, rule) == 3  # a defined figure wins even with an undefined tie-breaker


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(GroupRobustError, match="val_auroc"):
        get_rule("val_best")


@pytest.mark.parametrize("rule", [r for r in SELECTION_RULES.values() if r.needs_groups and r.split == "val"],
                         ids=lambda r: r.name)
def test_group_rules_refused_without_validation_groups(rule):
    with pytest.raises(GroupRobustError, match="regime is 'none'") as err:
        check_rule_for_regime(rule, "none")
    assert "\n" not in str(err.value)
    check_rule_for_regime(rule, "val")
    check_rule_for_regime(rule, "full")


@pytest.mark.parametrize("rule", [r for r in SELECTION_RULES.values() if not r.needs_groups or r.oracle],
                         ids=lambda r: r.name)
def test_rules_without_validation_groups_accepted_in_regime_none(rule):
    check_rule_for_regime(rule, "none")


def test_rule_needing_labels_the_split_lacks_is_refused_before_training():
    splits = load_dataset("spurious-gaussian", 0, **TINY)
    with pytest.raises(GroupRobustError, match="evaluation groups on the val split"):
        check_rule_for_split(get_rule("val_wilds_worst_group_acc"), splits.val)
    with pytest.raises(GroupRobustError, match="group labels"):
        check_rule_for_split(get_rule("val_worst_group_acc"), splits.val.without_groups())
    check_rule_for_split(get_rule("val_worst_attr_auroc"), splits.val)
    check_rule_for_split(get_rule("val_auroc"), splits.val.without_groups())
    with pytest.raises(GroupRobustError, match="needs validation"):
        resolve_config("spurious-gaussian", "erm", regime="none", select="val_worst_group_f1")


@pytest.mark.parametrize("rule", list(SELECTION_RULES.values()), ids=lambda r: r.name)
def test_only_oracle_rules_follow_the_test_split(rule):
    """A history whose validation figures are all equal and whose test figures peak at epoch 3:
    validation rules keep the earliest epoch, oracle rules (and only they) move to epoch 3."""
    key = "wilds" if rule.metric.startswith("eval_groups.") else rule.metric
    best = 0.9 if rule.higher_is_better else 0.1
    history = [_entry(1), _entry(2), _entry(3, test={key: best, "avg_acc": 0.9}), _entry(4)]
    assert history[pick(history, rule)]["epoch"] == (3 if rule.oracle else 1)


def test_training_selects_by_the_chosen_rule_and_marks_oracle(tmp_path):
    from grouprobust.runs import run

    for select, oracle in (("val_auroc", False), ("oracle_test_worst_group_acc", True)):
        cfg = resolve_config("spurious-gaussian", "erm", 0, TINY, {"epochs": "4"}, select=select)
        out = tmp_path / select
        result = run(cfg, out, save_model=False)
        history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
        rule = get_rule(select)
        values = [rule_value(h, rule) for h in history]
        assert rule_value(history[result["selected"]["epoch"] - 1], rule) == max(values)
        stored = json.loads((out / "result.json").read_text())
        assert stored["selected"] == {"rule": select, "epoch": result["selected"]["epoch"], "oracle": oracle}
        test = stored["metrics"]["test"]
        assert 0 <= test["auroc"] <= 1 and 0 <= test["ece"] <= 1 and test["train_weighted_avg_acc"] is not None
        assert np.isclose(test["adjusted_acc"], test["group_balanced_acc"])
