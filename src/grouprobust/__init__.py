"""grouprobust: train, compare and diagnose classifiers that must work for every group."""

__version__ = "0.1.0"

from grouprobust.errors import GroupRobustError

__all__ = ["GroupRobustError", "__version__"]
