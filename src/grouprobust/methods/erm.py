"""Empirical risk minimisation: the base method as it is."""

from grouprobust.methods.base import Method
from grouprobust.methods.registry import register_method


@register_method
class ERM(Method):
    name = "erm"
    needs = "none"
    summary = "empirical risk minimisation: mean loss over shuffled minibatches"
    same_as = "SubpopBench ERM"
    distributed = ""
