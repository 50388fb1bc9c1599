"""The method interface: a small class that plugs a sampler, an objective and some state into the loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch

from grouprobust.data.dataset import GroupDataset
from grouprobust.losses import LossFn
from grouprobust.methods.context import MethodContext
from grouprobust.params import Interval, Param

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
        #: Feature vectors live on the device; images and token ids stay on the host (usually memory-mapped)
        #: and each batch is copied over (`batch`).
        self.on_host = dataset.inputs != "features"
        self.x = dataset.x if self.on_host else torch.as_tensor(dataset.x, device=device)
        #: Where samplers put their index tensors: beside the inputs they pick, so that gathering a batch of
        #: host-held images never waits for the device (a device index read back would sync every step).
        self.index_device = torch.device("cpu") if self.on_host else device
        self.y = torch.as_tensor(dataset.y, device=device)
        self.g = None if dataset.g is None else torch.as_tensor(dataset.g, device=device)
        self.n = len(dataset)
        self.n_classes = dataset.n_classes
        self.n_groups = dataset.n_groups

    def batch(self, idx: torch.Tensor) -> Batch:
        """The `Batch` at indices ``idx`` (on `index_device`, or anywhere: then copied), on the device."""
        rows = self.host_rows(idx) if self.on_host else None  # gathered with the host index, before it moves
        idx = idx.to(self.device, non_blocking=True)
        g = None if self.g is None else self.g[idx]
        return Batch(idx, self.x[idx] if rows is None else rows, self.y[idx], g)

    def host_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The host-held inputs at ``idx`` on the device: images as float in [0, 1] (the model's input module
        normalises and augments them), token ids as int64. Pinned and copied asynchronously on CUDA. ``idx``
        is on the CPU (`index_device`); an index on the device is read back first, a synchronisation."""
        rows = torch.from_numpy(np.ascontiguousarray(self.x[idx.cpu().numpy()]))
        cuda = self.device.type == "cuda"
        if cuda:
            rows = rows.pin_memory()
        rows = rows.to(self.device, non_blocking=cuda)
        if self.dataset.inputs == "image":
            return rows.float().div_(255.0)
        return rows.long()


class MethodDeclaration:
    """What every registered method declares: ``name``, ``kind`` (``loop`` or ``two-stage``), ``needs``
    (the group labels it reads: ``none``, ``val`` or ``full``), ``summary``, ``same_as`` (other
    libraries' names for it) and ``params`` (its hyper-parameters, each with its constraint)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    needs: ClassVar[str] = "none"
    summary: ClassVar[str] = ""
    same_as: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    #: Why the method cannot train on several processes (torchrun); "" when it can, exactly: its loss on a
    #: rank's part of the batch is a mean over that part, and any statistic it takes over the batch is
    #: summed or gathered across ranks (`grouprobust.distributed`).
    distributed: ClassVar[str] = "its batch statistics are not shared across processes yet"


class Method(MethodDeclaration):
    """Base class: ERM's sampler (shuffled minibatches) and objective (mean per-example loss).

    Subclasses set ``name``, ``needs`` (the group labels they read: ``none``, ``val`` or ``full``),
    ``summary`` and ``params`` (their hyper-parameters, each with its constraint: values arrive
    checked and typed in ``hparams``), and override only what differs:
    `batches` (the sampler), `loss` (the objective), `setup` (work before training, e.g. JTT's
    first stage), `end_epoch` (after each epoch) and `epoch_log` (state written to ``history.jsonl``).
    A method that keeps state changing during training (beyond its ``generator``) adds it to
    `state_dict` and `load_state_dict`, so that a resumed run continues exactly where it stopped; what
    `setup` computes is computed again on resume (it must be deterministic) unless stored there too.
    """

    kind: ClassVar[str] = "loop"

    def __init__(self, hparams: dict[str, Any], data: TrainData, loss_fn: LossFn, generator: torch.Generator):
        self.hparams = hparams
        self.data = data
        self.loss_fn = loss_fn
        self.generator = generator
        self.batch_size: int = hparams["batch_size"]

    def setup(self, context: MethodContext) -> None:
        """Called once before the main training (after the data is on the device), with the narrow
        `grouprobust.methods.context.MethodContext` (build models, train a stage 1, the validation split)."""

    def batches(self) -> Iterator[torch.Tensor]:
        """One epoch of index tensors: `epoch_order` cut into minibatches (views, on `TrainData.index_device`).

        The loop draws the whole epoch when it begins (a checkpoint keeps the batches still to come)."""
        return iter(self.epoch_order().split(self.batch_size))

    def batches_per_epoch(self) -> int:
        """How many minibatches one epoch of `batches` yields (the learning-rate schedule plans with it)."""
        return -(-self.data.n // self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """The indices one epoch of `batches` trains on, in order, on `TrainData.index_device`: a seeded
        shuffle (drawn on the CPU; copied to the device once per epoch when the inputs live there)."""
        return torch.randperm(self.data.n, generator=self.generator).to(self.data.index_device)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar objective for one minibatch."""
        return self.loss_fn(model(batch.x), batch.y).mean()

    def end_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Called after each epoch's last step, before its evaluation (e.g. to adapt a schedule)."""

    def epoch_log(self) -> dict[str, Any]:
        """Extra fields for this epoch's ``history.jsonl`` line (JSON-serialisable)."""
        return {}

    def run_info(self) -> dict[str, Any]:
        """Extra fields for ``result.json`` (JSON-serialisable), e.g. derived quantities."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this method at a step boundary (tensors, numbers, strings, lists, tuples,
        dicts): here the sampler's generator state; subclasses with more state extend it."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (called after `setup`, on a resumed run)."""
        self.generator.set_state(state["generator"].cpu())


def to_list(values: torch.Tensor | np.ndarray) -> list:
    """A tensor or array as a plain list of Python floats (for JSON)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return [float(v) for v in np.asarray(values).ravel()]


class Stage2Data:
    """What a two-stage method's estimator is fitted on: frozen stage-1 features of the held-out
    training samples (labels only), the two validation halves (group-labelled) and the test split.

    The held-out samples' true groups are kept apart in ``heldout_groups`` for reporting (weight
    mass per group, the largest/smallest-weighted samples); they are never passed to an estimator.
    ``base_head`` is the stage-1 model's last layer on these features, ``(coef (k, d), intercept (k,))``,
    for methods that start from it (AFR, SELF); None when unknown.
    """

    def __init__(self, heldout: GroupDataset, target: GroupDataset, validation: GroupDataset, test: GroupDataset,
                 base_head: tuple[np.ndarray, np.ndarray] | None = None):
        self.heldout_groups = heldout.g
        self.heldout = heldout.without_groups()
        self.target, self.validation, self.test = target, validation, test
        self.base_head = base_head


class TwoStageMethod(MethodDeclaration):
    """Base class of two-stage methods: ERM stage 1 (an ordinary run), then `fit_stage2` on its features.

    Subclasses set ``name``, ``needs``, ``summary``, ``params`` (stage-2 parameters; the stage-1
    training parameters and the protocol's are added by `grouprobust.config`) and implement
    `fit_stage2`. ``select`` is the rule the estimator selects by, on the validation half; a run
    asking for another is refused when its config is resolved. The protocol (held-out split,
    validation halves, what is reported) is `grouprobust.two_stage`.
    """

    #: Parameters of the protocol itself, taken by every two-stage method.
    protocol_params: ClassVar[dict[str, Param]] = {
        "holdout_frac": Param(0.1, None, "fraction of train held out of stage 1 (the samples GSR reweights)",
                              Interval(0, 1, lo_open=True, hi_open=True)),
        "split_seed": Param(1, None, "seed of the held-out split (the GSR paper fixes numpy seed 1)", Interval(0)),
        "stage1": Param("", None, "stage-1 run directory to reuse; empty: train stage 1 in this run"),
        "standardize": Param(True, None, "standardise features with the stage-2 training set's mean and std"),
    }
    kind: ClassVar[str] = "two-stage"
    distributed: ClassVar[str] = ("its second stage is fitted in one process; train its stage 1 as an erm run "
                                  "under torchrun and pass it with --from")
    needs: ClassVar[str] = "val"
    select: ClassVar[str] = "val_worst_group_acc"

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        """Fit the estimator; returns ``(fitted estimator, info)`` where ``info["selected"]`` says what
        the estimator selected (e.g. ``{"epoch": step}`` or ``{"C": C}``) and the rest is reported."""
        raise NotImplementedError


def last_values(values: dict[str, Any]) -> dict[str, Any]:
    """A method's last-step figures for ``history.jsonl``: tensors (kept on the device during the
    epoch, so that steps never wait for the host) read back as floats, other values as they are."""
    return {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
