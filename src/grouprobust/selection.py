"""Model-selection rules: which epoch (or hyper-parameter point) to report, chosen on validation.

Each rule maximises (or minimises) one figure of the metrics dict ``M`` (`grouprobust.metrics`) on one
split. The validation rules mirror SubpopBench's ``subpopbench/learning/model_selection.py`` selection
methods; the ``oracle_*`` rules read the *test* split and are marked as oracle wherever they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError
from grouprobust.registry import Registry

if TYPE_CHECKING:
    from grouprobust.data.dataset import GroupDataset

# The labels a rule reads on its split, and how to tell whether a split carries them.
LABEL_KINDS = {
    "none": "no group labels",
    "groups": "group labels",
    "attributes": "attribute labels",
    "eval_groups": "evaluation groups",
}


@dataclass(frozen=True)
class SelectionRule:
    """Pick the entry with the best ``metrics[split][metric]`` (``metric`` may be dotted: ``a.b``).

    ``needs_groups``: it reads group-level labels (``labels`` says which) of its split.
    ``higher_is_better=False`` minimises. ``source``: the benchmark rule it reproduces.
    """

    name: str
    split: str
    metric: str
    needs_groups: bool
    oracle: bool = False
    description: str = ""
    higher_is_better: bool = True
    labels: str = "groups"
    source: str = ""

    @property
    def needs(self) -> str:
        """Which labels the rule reads: a key of `LABEL_KINDS`."""
        return self.labels if self.needs_groups else "none"


def _val(name: str, metric: str, labels: str, description: str, source: str, **kw: Any) -> SelectionRule:
    return SelectionRule(name, "val", metric, labels != "none", False, description,
                         labels="groups" if labels == "none" else labels, source=source, **kw)


#: Every selection rule by name, in the order they are listed (validation rules, then oracle rules).
SELECTION_RULES: Registry[SelectionRule] = Registry("selection rule", subject="select")


def register_rule(rule: SelectionRule) -> SelectionRule:
    """Register ``rule`` under its name; returns it."""
    return SELECTION_RULES.add(rule.name, rule)


for _rule in [
    _val("val_worst_group_acc", "worst_group_acc", "groups", "validation worst-group accuracy",
         "SubpopBench ValWorstAccAttributeYes"),
    _val("val_group_balanced_acc", "group_balanced_acc", "groups",
         "validation mean of group accuracies (SubpopBench's adjusted accuracy)", ""),
    _val("val_avg_acc", "avg_acc", "none", "validation average accuracy", "SubpopBench ValMeanAcc"),
    _val("val_worst_class_acc", "worst_class_acc", "none", "validation worst-class accuracy (no group labels)",
         "SubpopBench ValWorstAccAttributeNo"),
    _val("val_balanced_acc", "balanced_acc", "none", "validation class-balanced accuracy (macro recall)",
         "SubpopBench ValBalancedAcc"),
    _val("val_macro_precision", "macro_precision", "none", "validation macro-averaged precision over classes",
         "SubpopBench ValMeanPrecision"),
    _val("val_worst_class_precision", "worst_class_precision", "none", "validation worst-class precision",
         "SubpopBench ValWorstPrecision"),
    _val("val_macro_f1", "macro_f1", "none", "validation macro-averaged F1 over classes", "SubpopBench ValMeanF1"),
    _val("val_worst_class_f1", "worst_class_f1", "none", "validation worst-class F1", "SubpopBench ValWorstF1"),
    _val("val_worst_group_precision", "worst_group_precision", "attributes",
         "validation worst-group precision (class precision within each attribute value)", ""),
    _val("val_worst_group_f1", "worst_group_f1", "attributes",
         "validation worst-group F1 (group accuracy and within-attribute precision)", ""),
    _val("val_auroc", "auroc", "none", "validation AUROC (one-vs-rest macro for multiclass)", "SubpopBench ValAUROC"),
    _val("val_worst_attr_auroc", "worst_attr_auroc", "attributes", "validation worst-attribute AUROC", ""),
    _val("val_min_class_diff", "class_acc_diff", "none",
         "smallest sum of pairwise gaps between validation class accuracies (no group labels)",
         "SubpopBench ValClassDiff", higher_is_better=False),
    _val("val_wilds_worst_group_acc", "eval_groups.wilds_worst_group_acc", "eval_groups",
         "validation worst accuracy over (evaluation group, class) cells", "WILDS CivilComments eval"),
    SelectionRule("oracle_test_worst_group_acc", "test", "worst_group_acc", True, True,
                  "ORACLE: test worst-group accuracy", source="SubpopBench OracleWorstAcc"),
    SelectionRule("oracle_test_avg_acc", "test", "avg_acc", False, True, "ORACLE: test average accuracy",
                  source="SubpopBench OracleMeanAcc"),
]:
    register_rule(_rule)

DEFAULT_RULE = "val_worst_group_acc"
DEFAULT_RULE_NO_GROUPS = "val_worst_class_acc"


def get_rule(name: str) -> SelectionRule:
    """The rule called ``name``; a one-line error lists the known ones."""
    return SELECTION_RULES.get_entry(name)


def list_rules() -> list[dict[str, Any]]:
    """Every rule as a dict: name, split, metric, needs (labels read), oracle, direction, description, source."""
    return [{"name": r.name, "split": r.split, "metric": r.metric, "needs": r.needs, "oracle": r.oracle,
             "direction": "max" if r.higher_is_better else "min", "description": r.description, "source": r.source}
            for r in SELECTION_RULES.values()]


def _no_group_rules() -> str:
    return ", ".join(r.name for r in SELECTION_RULES.values() if r.split == "val" and not r.needs_groups)


def check_rule_for_regime(rule: SelectionRule, regime: str) -> None:
    """Refuse a rule that reads validation group labels the regime does not give."""
    if rule.needs_groups and regime == "none" and rule.split == "val":
        raise GroupRobustError(
            f"selection rule {rule.name!r} needs validation {LABEL_KINDS[rule.needs]} but the label regime is 'none'; "
            f"use regime 'val', or rule {DEFAULT_RULE_NO_GROUPS} (rules without group labels: {_no_group_rules()})",
            subject="select")


def split_has_labels(dataset: "GroupDataset", labels: str) -> bool:
    """Whether ``dataset`` carries the labels of kind ``labels`` (a key of `LABEL_KINDS`)."""
    return {"none": True, "groups": dataset.g is not None, "attributes": dataset.a is not None,
            "eval_groups": dataset.eval_groups is not None}[labels]


def check_rule_for_split(rule: SelectionRule, dataset: "GroupDataset") -> None:
    """Refuse, before training, a rule whose split (``dataset``) lacks the labels it reads."""
    if not split_has_labels(dataset, rule.needs):
        raise GroupRobustError(
            f"selection rule {rule.name!r} needs {LABEL_KINDS[rule.needs]} on the {rule.split} split, which "
            f"{dataset.name}/{dataset.split} does not carry; pick another selection rule", subject="select")


def rule_value(entry: dict[str, Any], rule: SelectionRule) -> float | None:
    """The rule's metric in one history entry or result (``entry["metrics"][split][metric]``), or None."""
    value: Any = entry.get("metrics", {}).get(rule.split, {})
    for part in rule.metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def selection_key(value: float | None, tie: float | None, higher_is_better: bool = True
                  ) -> tuple[float, float] | None:
    """The one sort key of model selection (larger is better), or None when ``value`` is undefined.

    ``value`` is the rule's figure (negated when the rule minimises it); ``tie`` breaks exact ties
    (the average accuracy on the same split: higher wins; undefined counts as lowest). Entries whose
    keys are still equal are resolved by `select_best_index`: the earliest wins.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    tie = float("-inf") if tie is None or (isinstance(tie, float) and np.isnan(tie)) else float(tie)
    return (float(value) if higher_is_better else -float(value), tie)


def select_best_index(keys: Sequence[tuple[float, float] | None]) -> int | None:
    """Index of the largest key (`selection_key`); full ties go to the earliest; None if every key is None.

    This is the single selection rule of the project: training (which epoch), the last-layer
    estimators (which outer step of GSR, which ``C`` of DFR), and reports (which hyper-parameter
    point, by the mean over seeds) all choose through it.
    """
    best, best_key = None, None
    for i, key in enumerate(keys):
        if key is not None and (best_key is None or key > best_key):
            best, best_key = i, key
    return best


def rule_key(entry: dict[str, Any], rule: SelectionRule) -> tuple[float, float] | None:
    """`selection_key` of one history entry or result under ``rule``: the rule's metric, ties broken by
    average accuracy on the same split."""
    avg = entry.get("metrics", {}).get(rule.split, {}).get("avg_acc")
    return selection_key(rule_value(entry, rule), avg, rule.higher_is_better)

