"""End-to-end training methods: each a small class plugged into the one loop in `grouprobust.train`."""

from grouprobust.methods.base import REGIMES, Batch, Method, TrainData
from grouprobust.methods.registry import get_method, list_methods, register_method

__all__ = ["REGIMES", "Batch", "Method", "TrainData", "get_method", "list_methods", "register_method"]
