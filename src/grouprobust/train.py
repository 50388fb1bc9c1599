"""The one training loop: every end-to-end method runs through `Trainer.run_epochs`."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from grouprobust.config import RunConfig
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.registry import load_dataset
from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.losses import make_loss
from grouprobust.methods.base import Method, TrainData
from grouprobust.methods.registry import get_method, get_pipeline
from grouprobust.metrics import dataset_metrics
from grouprobust.models import Classifier, build_model, pick_device
from grouprobust.rundir import RunDirectory
from grouprobust.selection import check_rule_for_split, get_rule, rule_key

EpochCallback = Callable[[int, float], None]


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators (model initialisation draws from torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: torch.nn.Module, hparams: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW with the run's lr and weight decay."""
    name, lr, wd = hparams["optimizer"], float(hparams["lr"]), float(hparams["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(hparams["momentum"]), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    raise GroupRobustError(f"unknown optimizer {name!r}; use sgd, adam or adamw (--set optimizer=NAME)")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: np.ndarray | torch.Tensor, device: torch.device,
                   chunk: int = 4096) -> torch.Tensor:
    """Logits for all of ``x``, computed in chunks in eval mode; returned on the CPU."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    out = [model(x[i:i + chunk].to(device)).cpu() for i in range(0, len(x), chunk)]
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: torch.nn.Module, dataset: GroupDataset, device: torch.device,
             train_group_counts: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics dict ``M`` (see `grouprobust.metrics.group_metrics`) of ``model`` on ``dataset``.

    Computed from the softmax probabilities; ``train_group_counts`` (the training split's
    ``group_counts()``) adds the training-proportion-weighted average accuracy.
    """
    probs = torch.softmax(predict_logits(model, dataset.x, device).double(), dim=1).numpy()
    return dataset_metrics(dataset, probs, train_group_counts)


class Trainer:
    """Trains one configured run on given splits; methods call back into it (e.g. JTT's first stage).

    ``log`` receives each ``history.jsonl`` entry. Splits are cut to what the label regime gives:
    the method sees training groups only if it needs them and the regime is ``full``; validation
    groups are hidden when the regime is ``none``.
    """

    def __init__(self, config: RunConfig, splits: DatasetSplits, device: torch.device | None = None,
                 log: Callable[[dict[str, Any]], None] | None = None, on_epoch: EpochCallback | None = None):
        self.config = config
        self.hparams = config.hparams
        self.device = device or pick_device()
        self.log = log or (lambda entry: None)
        self.on_epoch = on_epoch
        self.method_cls: type[Method] = get_method(config.method)
        gives_train_groups = config.regime == "full" and self.method_cls.needs == "full"
        self.train_set = splits.train if gives_train_groups else splits.train.without_groups()
        self.val_set = splits.val if config.regime != "none" else splits.val.without_groups()
        self.test_set = splits.test
        self.full_train = splits.train  # for reporting only; never handed to a method
        self.rule = get_rule(config.select)
        check_rule_for_split(self.rule, self.val_set if self.rule.split == "val" else self.test_set)

    # -- building blocks methods may use -------------------------------------------------------
    def new_model(self) -> Classifier:
        """A freshly initialised model of the configured architecture, on the device."""
        return build_model(self.hparams["model"], self.train_set.input_shape, self.train_set.n_classes,
                           int(self.hparams["hidden"])).to(self.device)

    def new_method(self, method_cls: type[Method], data: TrainData, hparams: dict[str, Any] | None = None) -> Method:
        """An instance of ``method_cls`` on ``data`` with the run's loss and a seeded generator."""
        hp = hparams or self.hparams
        generator = torch.Generator().manual_seed(self.config.seed)
        return method_cls(hp, data, make_loss(hp, data.dataset.class_counts()), generator)

    def run_epochs(self, method: Method, model: torch.nn.Module, epochs: int,
                   optimizer: torch.optim.Optimizer | None = None,
                   after_epoch: Callable[[int, float], None] | None = None, stage: str = "train") -> None:
        """The training loop: ``epochs`` passes of ``method``'s batches and objective over ``model``.

        Raises `DivergedError` as soon as the loss is NaN or infinite.
        """
        optimizer = optimizer or make_optimizer(model, method.hparams)
        data = method.data
        model.train()
        for epoch in range(1, epochs + 1):
            total, steps = 0.0, 0
            for idx in method.batches():
                loss = method.loss(model, data.batch(idx))
                value = float(loss.detach())
                if not np.isfinite(value):
                    raise DivergedError(f"{stage}: loss became {value} at epoch {epoch} step {steps + 1}; "
                                        "lower the learning rate (--set lr=...) or check the inputs")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += value
                steps += 1
            if after_epoch is not None:
                after_epoch(epoch, total / max(steps, 1))

    # -- the run -----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train, evaluate every ``eval_every`` epochs, select by the rule; returns the result dict.

        The selected model's weights are kept in ``self.selected_state``.
        """
        start = time.perf_counter()
        seed_everything(self.config.seed)
        data = TrainData(self.train_set, self.device)
        method = self.new_method(self.method_cls, data)
        method.setup(self)
        seed_everything(self.config.seed)
        model = self.new_model()
        self.model = model
        epochs, every = int(self.hparams["epochs"]), max(1, int(self.hparams["eval_every"]))
        entries: list[dict[str, Any]] = []
        best: dict[str, Any] = {"key": None, "entry": None}
        self.selected_state = None
        epoch_start = [time.perf_counter()]
        train_counts = self.full_train.group_counts() if self.full_train.has_groups else None

        def after_epoch(epoch: int, train_loss: float) -> None:
            entry: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            entry.update(method.epoch_log())
            if epoch % every == 0 or epoch == epochs:
                entry["metrics"] = {"val": evaluate(model, self.val_set, self.device, train_counts),
                                    "test": evaluate(model, self.test_set, self.device, train_counts)}
                key = rule_key(entry, self.rule)
                if key is not None and (best["key"] is None or key > best["key"]):
                    best["key"], best["entry"] = key, entry
                    self.selected_state = copy.deepcopy(model.state_dict())
            entry["time_s"] = time.perf_counter() - epoch_start[0]
            epoch_start[0] = time.perf_counter()
            entries.append(entry)
            self.log(entry)
            if self.on_epoch is not None:
                self.on_epoch(epoch, train_loss)

        self.run_epochs(method, model, epochs, after_epoch=after_epoch)
        chosen = best["entry"]
        if chosen is None:
            raise GroupRobustError(f"selection rule {self.rule.name!r} found no value on {self.rule.split}; "
                                   "that split may carry no group labels: pick another --select")
        return {
            "dataset": self.config.dataset,
            "method": self.config.method,
            "seed": self.config.seed,
            "regime": self.config.regime,
            "selected": {"rule": self.rule.name, "epoch": chosen["epoch"], "oracle": self.rule.oracle},
            "metrics": chosen["metrics"],
            # Test numbers are reported for the selected epoch only; the last epoch gets its validation figures.
            "final": {"epoch": entries[-1]["epoch"], "val": (entries[-1].get("metrics") or {}).get("val")},
            "train_group_counts": None if train_counts is None else train_counts.tolist(),
            "train_empty_groups": self.full_train.empty_groups(),
            "method_info": method.run_info(),
            "hparams": self.hparams,
            "time_s": time.perf_counter() - start,
        }


def run(config: RunConfig, out: Path | None = None, splits: DatasetSplits | None = None,
        device: torch.device | str | None = None, on_epoch: EpochCallback | None = None,
        save_model: bool = True) -> dict[str, Any]:
    """Run one configured training and write its run directory at ``out`` (if given).

    Returns the result dict (also written as ``result.json``). If ``out`` already holds this
    finished run, its stored result is returned without training (``result["reused"] = True``).
    A diverging run is written with ``error.json`` and raises `DivergedError`; an interrupted
    one leaves nothing at ``out``.
    """
    device = pick_device(device) if not isinstance(device, torch.device) else device
    pipeline = get_pipeline(config.method)
    if pipeline is not None:  # e.g. last-layer retraining: runs its own stages (stage 1 through this function)
        return pipeline.run(config, out, device=device, on_epoch=on_epoch, splits=splits)
    writer = None
    if out is not None:
        writer = RunDirectory(Path(out), config.to_dict())
        stored = writer.reusable_result()
        if stored is not None:
            return stored
    splits = splits or load_dataset(config.dataset, config.seed, **config.data)
    trainer = Trainer(config, splits, device, log=writer.log if writer else None, on_epoch=on_epoch)
    if writer is None:
        return trainer.fit()
    with writer.writing():
        result = trainer.fit()
        result["run_id"] = config.run_id
        if save_model and trainer.selected_state is not None:
            torch.save(trainer.selected_state, writer.file("model.pt"))
        writer.finish(result)
    return result
