"""Methods: each a small class registered with `register_method`.

Loop methods (`Method` subclasses) plug a sampler, an objective and some state into the one training
loop (`grouprobust.training.Trainer`); two-stage methods (`TwoStageMethod` subclasses) fit a
last-layer estimator on the frozen features of a stage-1 run (`grouprobust.two_stage`). Every module
of this package is imported by the registry, so a new method is one new module here.
"""

from grouprobust.methods.base import REGIMES, Batch, Method, Stage2Data, TrainData, TwoStageMethod
from grouprobust.methods.registry import get_method, list_methods, method_names, register_method

__all__ = ["REGIMES", "Batch", "Method", "Stage2Data", "TrainData", "TwoStageMethod", "get_method", "list_methods",
           "method_names", "register_method"]
