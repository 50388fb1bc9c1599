"""Model-selection rules: which epoch (or hyper-parameter point) to report, chosen on validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from grouprobust.errors import GroupRobustError


@dataclass(frozen=True)
class SelectionRule:
    """Pick the entry maximising ``metrics[split][metric]``; ``needs_groups`` if it reads group labels."""

    name: str
    split: str
    metric: str
    needs_groups: bool
    oracle: bool = False
    description: str = ""


SELECTION_RULES: dict[str, SelectionRule] = {r.name: r for r in [
    SelectionRule("val_worst_group_acc", "val", "worst_group_acc", True, description="validation worst-group accuracy"),
    SelectionRule("val_group_balanced_acc", "val", "group_balanced_acc", True, description="validation group-balanced accuracy"),
    SelectionRule("val_avg_acc", "val", "avg_acc", False, description="validation average accuracy"),
    SelectionRule("val_worst_class_acc", "val", "worst_class_acc", False, description="validation worst-class accuracy (no group labels)"),
    SelectionRule("val_balanced_acc", "val", "balanced_acc", False, description="validation class-balanced accuracy"),
    SelectionRule("oracle_test_worst_group_acc", "test", "worst_group_acc", True, True, "ORACLE: test worst-group accuracy"),
    SelectionRule("oracle_test_avg_acc", "test", "avg_acc", False, True, "ORACLE: test average accuracy"),
]}

DEFAULT_RULE = "val_worst_group_acc"
DEFAULT_RULE_NO_GROUPS = "val_worst_class_acc"


def get_rule(name: str) -> SelectionRule:
    """The rule called ``name``; a one-line error lists the known ones."""
    if name not in SELECTION_RULES:
        raise GroupRobustError(f"unknown selection rule {name!r}; choose one of: {', '.join(SELECTION_RULES)}")
    return SELECTION_RULES[name]


def check_rule_for_regime(rule: SelectionRule, regime: str) -> None:
    """Refuse a rule that reads validation group labels the regime does not give."""
    if rule.needs_groups and regime == "none" and not rule.oracle:
        raise GroupRobustError(
            f"selection rule {rule.name!r} needs validation group labels but the label regime is 'none'; "
            f"use --select {DEFAULT_RULE_NO_GROUPS} or --regime val")


def rule_value(entry: dict[str, Any], rule: SelectionRule) -> float | None:
    """The rule's metric in one history entry (``entry["metrics"][split][metric]``), or None."""
    return entry.get("metrics", {}).get(rule.split, {}).get(rule.metric)


def rule_key(entry: dict[str, Any], rule: SelectionRule) -> tuple[float, float] | None:
    """Sort key of one entry: the rule's metric, ties broken by average accuracy on the same split."""
    value = rule_value(entry, rule)
    if value is None:
        return None
    avg = entry.get("metrics", {}).get(rule.split, {}).get("avg_acc")
    return (value, avg if avg is not None else float("-inf"))


def select_best(entries: Sequence[dict[str, Any]], rule: SelectionRule) -> int:
    """Index of the entry with the highest rule key (`rule_key`); full ties go to the earliest entry."""
    best, best_key = -1, None
    for i, entry in enumerate(entries):
        key = rule_key(entry, rule)
        if key is not None and (best_key is None or key > best_key):
            best, best_key = i, key
    if best < 0:
        raise GroupRobustError(f"selection rule {rule.name!r}: no entry has {rule.split} {rule.metric}; "
                               "the split may carry no group labels")
    return best
