"""The method interface: a small class that plugs a sampler, an objective and some state into the loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np
import torch

from grouprobust.data.dataset import GroupDataset
from grouprobust.hparams import Param
from grouprobust.losses import LossFn

if TYPE_CHECKING:
    from grouprobust.train import Trainer

#: Label regimes, from least to most group labels given: which splits carry group labels.
REGIMES = ("none", "val", "full")


@dataclass
class Batch:
    """One minibatch: indices into the training set and the tensors at those indices (on the device)."""

    idx: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    g: torch.Tensor | None


class TrainData:
    """The training split as tensors on the device; ``g`` is None unless the method may read groups."""

    def __init__(self, dataset: GroupDataset, device: torch.device):
        self.dataset = dataset
        self.device = device
        self.x = torch.as_tensor(dataset.x, device=device)
        self.y = torch.as_tensor(dataset.y, device=device)
        self.g = None if dataset.g is None else torch.as_tensor(dataset.g, device=device)
        self.n = len(dataset)
        self.n_classes = dataset.n_classes
        self.n_groups = dataset.n_groups

    def batch(self, idx: torch.Tensor) -> Batch:
        """The `Batch` at CPU indices ``idx``."""
        idx = idx.to(self.device, non_blocking=True)
        return Batch(idx, self.x[idx], self.y[idx], None if self.g is None else self.g[idx])


class Method:
    """Base class: ERM's sampler (shuffled minibatches) and objective (mean per-example loss).

    Subclasses set ``name``, ``needs`` (the group labels they read: ``none``, ``val`` or ``full``),
    ``summary`` and ``params`` (their hyper-parameters), and override only what differs:
    `batches` (the sampler), `loss` (the objective), `setup` (work before training, e.g. JTT's
    first stage) and `epoch_log` (state written to ``history.jsonl``).
    """

    name: ClassVar[str] = ""
    needs: ClassVar[str] = "none"
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        self.hparams = hparams
        self.data = data
        self.loss_fn = loss_fn
        self.generator = generator
        self.batch_size = int(hparams["batch_size"])

    def setup(self, trainer: "Trainer") -> None:
        """Called once before the main training (after the data is on the device)."""

    def batches(self) -> Iterator[torch.Tensor]:
        """One epoch of CPU index tensors: a seeded shuffle cut into minibatches."""
        perm = torch.randperm(self.data.n, generator=self.generator)
        return iter(perm.split(self.batch_size))

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar objective for one minibatch."""
        return self.loss_fn(model(batch.x), batch.y).mean()

    def epoch_log(self) -> dict[str, Any]:
        """Extra fields for this epoch's ``history.jsonl`` line (JSON-serialisable)."""
        return {}

    def run_info(self) -> dict[str, Any]:
        """Extra fields for ``result.json`` (JSON-serialisable), e.g. derived quantities."""
        return {}


def to_list(values: torch.Tensor | np.ndarray) -> list:
    """A tensor or array as a plain list of Python floats (for JSON)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return [float(v) for v in np.asarray(values).ravel()]
