"""Last-layer estimators on frozen features, scikit-learn style: GSR, GSR-HF, DFR, and exact weight influence.

- `GSR` (``hessian="exact"``) / GSR-HF (``hessian="free"``): learn weights over held-out samples
  for a retrained last layer, driven by a group-labelled target set.
- `DFR`: retrain the last layer on group-balanced subsets of group-labelled data.
- `ClassifierRetraining`: Kang et al.'s classifier re-training (cRT, ReWeightCRT, VanillaCRT), no group labels.
- `AFR`, `SELF`: retrain the last layer from the base head without training group labels
  (confidence-based weights; early-stop disagreements).
- `WeightedLogisticRegression`: the inner problem, solved to high precision.
- `weight_influence`: exact derivative of an evaluation loss w.r.t. each training weight.
- `worst_group_scorer` / `group_balanced_scorer`: scorers for ``GridSearchCV`` / ``cross_validate``
  that receive each fold's groups through metadata routing (`grouprobust.lastlayer.scoring`).
"""

from grouprobust.lastlayer.crt import ClassifierRetraining
from grouprobust.lastlayer.dfr import DFR
from grouprobust.lastlayer.gsr import GSR
from grouprobust.lastlayer.influence import weight_influence
from grouprobust.lastlayer.label_free import AFR, SELF
from grouprobust.lastlayer.logistic import WeightedLogisticRegression
from grouprobust.lastlayer.scoring import (
    group_balanced_accuracy,
    group_balanced_scorer,
    worst_group_accuracy,
    worst_group_scorer,
)

__all__ = ["AFR", "ClassifierRetraining", "DFR", "GSR", "SELF", "WeightedLogisticRegression",
           "group_balanced_accuracy", "group_balanced_scorer", "weight_influence", "worst_group_accuracy",
           "worst_group_scorer"]
