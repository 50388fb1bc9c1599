"""Last-layer estimators on frozen features, scikit-learn style: GSR, GSR-HF, DFR, and exact weight influence.

- `GSR` (``hessian="exact"``) / GSR-HF (``hessian="free"``): learn weights over held-out samples
  for a retrained last layer, driven by a group-labelled target set.
- `DFR`: retrain the last layer on group-balanced subsets of group-labelled data.
- `AFR`, `SELF`: retrain the last layer from the base head without training group labels
  (confidence-based weights; early-stop disagreements).
- `WeightedLogisticRegression`: the inner problem, solved to high precision.
- `weight_influence`: exact derivative of an evaluation loss w.r.t. each training weight.
"""

from grouprobust.lastlayer.dfr import DFR
from grouprobust.lastlayer.gsr import GSR
from grouprobust.lastlayer.influence import weight_influence
from grouprobust.lastlayer.label_free import AFR, SELF
from grouprobust.lastlayer.logistic import WeightedLogisticRegression

__all__ = ["AFR", "DFR", "GSR", "SELF", "WeightedLogisticRegression", "weight_influence"]
