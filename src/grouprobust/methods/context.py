"""`MethodContext`: everything a method's `setup` may use, and nothing more.

A method never sees the trainer, the full training set or any split the label regime withholds.
What it may do before training: build a model or an optimizer like the run's, train a stage-1 model
through the one training loop (`train_stage1`: ERM on the method's own training data, reused from the
stage-1 store when the same stage 1 was trained before), read a finished run's model, and look at the
validation split as the regime gives it. Reports that compare a method's per-example output with the
true training groups (JTT's error set, GERNE's pseudo-attributes) go through `true_group_report`,
which hands the true groups to the report function only, never to the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from grouprobust.data.dataset import GroupDataset
from grouprobust.models import Classifier


class MethodContext(Protocol):
    """The narrow view of a run that `grouprobust.methods.base.Method.setup` receives."""

    #: Where the run trains.
    device: torch.device
    #: The validation split, with group labels only when the label regime gives them.
    validation: GroupDataset

    def new_model(self) -> Classifier:
        """A freshly initialised model of the run's architecture (backbone and head), on the device."""

    def new_optimizer(self, model: torch.nn.Module, hparams: dict[str, Any] | None = None) -> torch.optim.Optimizer:
        """The run's optimizer (or one built from ``hparams``) over ``model``'s parameters."""

    def train_stage1(self, data: Any, epochs: int, stage: str, hparams: dict[str, Any] | None = None) -> Classifier:
        """A model trained from a fresh, seeded initialisation by ERM on ``data`` (a method's `TrainData`) for
        ``epochs`` epochs with ``hparams`` (default: the run's), through the training loop; ``stage`` names it
        in errors. Returned in eval-ready state on the device; reused from the stage-1 store when the same
        stage 1 (dataset, data options, seed, training parameters, epochs) was trained before."""

    def load_reference_model(self, run_dir: str | Path, subject: str) -> Classifier:
        """The model of a finished run on this run's dataset, data options and seed; ``subject`` names the
        parameter that gave the path (errors name it)."""

    def true_group_report(self, report: Callable[[np.ndarray, GroupDataset], dict[str, Any]],
                          values: np.ndarray) -> dict[str, Any]:
        """``report(values, training split with its true groups)``, for reporting only (the method does not
        receive the split); a report without groups when the dataset has none."""
