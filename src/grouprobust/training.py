"""The one training loop: every loop method runs through `Trainer.run_epochs`; `Trainer.fit` trains,
evaluates and selects one run and returns its `RunResult` (`grouprobust.runs.run` writes it)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from grouprobust.checkpoint import (StopRequest, global_rng_states, load_checkpoint, module_rng_states,
                                    save_checkpoint, set_global_rng_states, set_module_rng_states)
from grouprobust.config import RunConfig
from grouprobust.data.disk_cache import cache_dir, entry_name
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.distributed import (global_share, is_distributed, is_main_process, mean_over_ranks, shard_batch,
                                     wrap_model)
from grouprobust.errors import DivergedError, GroupRobustError, RunInterrupted
from grouprobust.group_inference import inference_quality, load_inferred_groups
from grouprobust.losses import make_loss
from grouprobust.methods.base import Method, TrainData
from grouprobust.methods.erm import ERM
from grouprobust.methods.registry import get_method
from grouprobust.intervals import annotate_metrics
from grouprobust.metrics import dataset_metrics
from grouprobust.output import dumps, write_atomic
from grouprobust.params import RUN_ONLY_PARAMS, TRAIN_PARAMS
from grouprobust.models import Classifier, autocast_dtype, build_network, memory_format, pick_device, predict_logits
from grouprobust.result import RunResult
from grouprobust.selection import check_rule_for_split, get_rule, rule_key, select_best_index
from grouprobust.trained import load_trained_run

EpochCallback = Callable[[int, float], None]

#: Steps between the training loop's checks that the loss is finite (each check synchronises with the device).
DIVERGENCE_CHECK_EVERY = 32


def _checked_sum(recent: list[torch.Tensor], steps: int, epoch: int, stage: str) -> torch.Tensor:
    """The sum (float64, on the device) of the last ``len(recent)`` steps' losses of ``steps`` this epoch;
    raises `DivergedError` naming the first of them that is NaN or infinite (one host read)."""
    values = torch.stack(recent).double()
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise DivergedError(f"{stage}: loss became {float(values[first])} at epoch {epoch} step "
                            f"{steps - len(recent) + first + 1}; lower the learning rate lr or check the inputs",
                            subject="hparam:lr")
    return values.sum()


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators (model initialisation draws from torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def validation_set(splits: DatasetSplits, regime: str) -> GroupDataset:
    """The validation split a run under label ``regime`` sees: without its group labels when the regime gives none."""
    return splits.val if regime != "none" else splits.val.without_groups()


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused SGD, Adam and AdamW kernels


def make_optimizer(model: torch.nn.Module, hparams: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW with the run's lr and weight decay.

    The fused implementation (one kernel per update, weight decay included) on CPUs and CUDA GPUs, the
    multi-tensor (``foreach``) one elsewhere. On a CPU, Adam's step of a small MLP takes 56 µs fused
    against 145 µs multi-tensor and 161 µs for torch's default per-parameter loop; an ERM epoch of
    spurious-gaussian's MLP went from 0.172 to 0.126 s. Fused updates round differently from the loop
    (a few 1e-8 on values of order 0.3 after 200 steps); the multi-tensor one matches it to the bit.
    """
    name, lr, wd = hparams["optimizer"], hparams["lr"], hparams["weight_decay"]
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen backbone (finetune=head) is left out
    kind = {"fused": True} if all(p.device.type in FUSED_DEVICES for p in params) else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=hparams["momentum"], weight_decay=wd, **kind)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **kind)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **kind)
    raise GroupRobustError(f"unknown optimizer {name!r}; use sgd, adam or adamw", subject="hparam:optimizer")


def make_scheduler(optimizer: torch.optim.Optimizer, hparams: dict[str, Any],
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The learning-rate schedule of ``hparams["scheduler"]`` over ``total_steps`` optimizer steps: a linear
    warm-up from 0 over ``warmup_frac`` of them, then a linear or cosine decay to 0 (None for ``none``)."""
    kind = hparams.get("scheduler", "none")
    if kind == "none":
        return None
    warmup = int(hparams.get("warmup_frac", 0.0) * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, model: torch.nn.Module,
                    clip: float, scheduler: torch.optim.lr_scheduler.LambdaLR | None) -> None:
    """One update from the accumulated gradients: unscale, clip to the global norm ``clip`` (if > 0), step,
    move the learning-rate schedule, clear the gradients."""
    if clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def evaluate(model: torch.nn.Module, dataset: GroupDataset, device: torch.device,
             train_group_counts: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics dict ``M`` (see `grouprobust.metrics.group_metrics`) of ``model`` on ``dataset``.

    Computed from the softmax probabilities; ``train_group_counts`` (the training split's
    ``group_counts()``) adds the training-proportion-weighted average accuracy.
    """
    probs = torch.softmax(predict_logits(model, dataset.x, device).double(), dim=1).numpy()
    return annotate_metrics(dataset_metrics(dataset, probs, train_group_counts))


def stage1_model_file(config: RunConfig, hparams: dict[str, Any], epochs: int, n_train: int) -> Path:
    """Where the stage-1 store keeps the ERM model that `TrainerContext.train_stage1` trains for ``config`` with
    ``hparams`` for ``epochs`` epochs: keyed by everything that determines it (dataset, its options and input
    files, seed, the training and loss parameters, epochs, training-set size), not by the method, so JTT,
    gerne-pseudo and every value of their own parameters share one fine-tuned stage 1."""
    # the method's own parameters, and those the stage-1 loop does not read (it trains ``epochs`` epochs)
    ignored = (set(get_method(config.method).params) - set(TRAIN_PARAMS)) | {"epochs", "max_steps", "eval_every",
                                                                             "eval_every_steps", *RUN_ONLY_PARAMS}
    training = {k: v for k, v in hparams.items() if k not in ignored}
    key = {"dataset": config.dataset, "data": config.data, "inputs": config.dataset_inputs(), "seed": config.seed,
           "hparams": training, "epochs": epochs, "n_train": n_train}
    return cache_dir("stage1") / f"{entry_name(key)[:16]}.pt"


@dataclass
class LoopCheckpoints:
    """How `Trainer.run_epochs` checkpoints: ``save(state)`` stores the loop's part of a checkpoint (its
    position, the optimizer, scheduler and grad scaler) with whatever the caller adds, every
    ``every_epochs`` epochs, or every ``every_steps`` optimizer steps when that is set (0 and 0: only
    on a stop request); ``resume`` is such a state to continue from; ``stop`` records SIGTERM/SIGINT."""

    save: Callable[[dict[str, Any]], None]
    every_epochs: int = 1
    every_steps: int = 0
    resume: dict[str, Any] | None = None
    stop: StopRequest | None = None


class _LoopState:
    """Where the training loop is: the epoch in progress (or last finished), optimizer steps and
    minibatches done, the epoch's batches (None between epochs) and the position in them, and the loss
    sums not yet reported (kept on the device, as they are summed, so a resumed run sums alike)."""

    def __init__(self, device: torch.device, stage: str, index_device: torch.device):
        self.device, self.stage = device, stage
        self.index_device = index_device  # where the method's sampler puts its index tensors
        self.epoch = self.step = self.minibatches = 0
        self.batches: list[torch.Tensor] | None = None
        self.position = self.count = self.since_count = 0
        self.total = torch.zeros((), dtype=torch.float64, device=device)  # this epoch's loss sum
        self.since = torch.zeros((), dtype=torch.float64, device=device)  # loss sum since the last after_steps
        self.recent: list[torch.Tensor] = []  # losses not yet checked, still on the device

    def begin_epoch(self, batches: list[torch.Tensor]) -> None:
        self.epoch += 1
        self.batches, self.position, self.count = batches, 0, 0
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.recent = []

    def finished(self, epochs: int, max_steps: int) -> bool:
        """Whether training is over: ``max_steps`` optimizer steps done when set, else ``epochs`` epochs done
        with none in progress."""
        return self.step >= max_steps if max_steps else self.batches is None and self.epoch >= epochs

    def check_recent(self) -> None:
        """Check the unchecked losses (`_checked_sum`) and add them to the epoch's and the report's sums."""
        if not self.recent:
            return
        window = _checked_sum(self.recent, self.count, self.epoch, self.stage)
        self.total += window
        self.since += window
        self.since_count += len(self.recent)
        self.recent = []

    def take_since(self) -> float:
        """The mean loss since the last call (host read), and start a new sum."""
        mean = float(mean_over_ranks(self.since)) / max(self.since_count, 1)
        self.since.zero_()
        self.since_count = 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        batches = None if self.batches is None else [b.cpu() for b in self.batches[self.position:]]
        return {"epoch": self.epoch, "step": self.step, "minibatches": self.minibatches, "batches": batches,
                "count": self.count, "since_count": self.since_count, "total": self.total, "since": self.since,
                "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.device
        self.epoch, self.step, self.minibatches = state["epoch"], state["step"], state["minibatches"]
        self.batches = None if state["batches"] is None else [b.to(self.index_device) for b in state["batches"]]
        self.position, self.count, self.since_count = 0, state["count"], state["since_count"]
        self.total, self.since = state["total"].to(device), state["since"].to(device)
        self.recent = [t.to(device) for t in state["recent"]]


class TrainerContext:
    """The `grouprobust.methods.context.MethodContext` a `Trainer` hands its method's ``setup``."""

    def __init__(self, trainer: "Trainer"):
        self._trainer = trainer
        self.device = trainer.device
        self.validation = trainer.val_set

    def new_model(self) -> Classifier:
        return self._trainer.new_model()

    def new_optimizer(self, model: torch.nn.Module, hparams: dict[str, Any] | None = None) -> torch.optim.Optimizer:
        return self._trainer.new_optimizer(model, hparams)

    def train_stage1(self, data: TrainData, epochs: int, stage: str, hparams: dict[str, Any] | None = None) -> Classifier:
        trainer = self._trainer
        hp = hparams or trainer.hparams
        seed_everything(trainer.config.seed)
        model = trainer.new_model()
        stored = stage1_model_file(trainer.config, hp, epochs, data.n) if hp.get("backbone") else None
        if stored is not None and stored.is_file():
            try:
                model.load_state_dict(torch.load(stored, map_location=trainer.device, weights_only=True))
                return model
            except (RuntimeError, OSError, EOFError):
                pass  # a damaged entry: train again and replace it
        erm = trainer.new_method(ERM, data, hp)
        trainer.run_epochs(erm, model, epochs, stage=stage)
        if stored is not None:
            state = model.state_dict()
            stored.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(stored, lambda fh: torch.save(state, fh))
        return model

    def load_reference_model(self, run_dir: str | Path, subject: str) -> Classifier:
        return self._trainer.load_reference_model(run_dir, subject)

    def true_group_report(self, report: Callable[[np.ndarray, GroupDataset], dict[str, Any]],
                          values: np.ndarray) -> dict[str, Any]:
        return report(values, self._trainer.full_train)


class Trainer:
    """Trains one configured run on given splits; its method sees it only through a `TrainerContext`.

    ``log`` receives each ``history.jsonl`` entry (on a resumed run, first those written before it
    stopped). ``checkpoint``: see `fit`. Splits are cut to what the label regime gives:
    the method sees training groups only if it needs them and the regime is ``full``; validation
    groups are hidden when the regime is ``none``.
    """

    def __init__(self, config: RunConfig, splits: DatasetSplits, device: torch.device | None = None,
                 log: Callable[[dict[str, Any]], None] | None = None, on_epoch: EpochCallback | None = None,
                 download: bool = False, checkpoint: Path | None = None):
        self.config = config
        #: The run's checkpoint file (`grouprobust.checkpoint.checkpoint_path`): resumed from when it exists,
        #: written while training; None: no checkpoints.
        self.checkpoint = checkpoint
        self.hparams = config.hparams
        #: Whether a backbone's pretrained weights may be fetched from the network (``--download``).
        self.download = download
        #: The network's name for `memory_format`: the small model's, or "backbone".
        self.architecture = config.hparams["model"] if not config.hparams.get("backbone") else "backbone"
        self.device = device or pick_device()
        self.log = log or (lambda entry: None)
        self.on_epoch = on_epoch
        self.method_cls: type[Method] = get_method(config.method)
        if not issubclass(self.method_cls, Method):
            raise GroupRobustError(f"method {config.method!r} is a {self.method_cls.kind} method, not one run of the "
                                   "training loop; run it with grouprobust.runs.run", subject="method")
        gives_train_groups = config.regime == "full" and self.method_cls.needs == "full"
        self.train_set = splits.train if gives_train_groups else splits.train.without_groups()
        #: What inferred the training groups, and how well (reporting only), when they come from a file.
        self.group_inference: dict[str, Any] | None = None
        if self.hparams.get("train_groups"):
            self.train_set = self._inferred_train_set(splits.train)
        self.val_set = validation_set(splits, config.regime)
        self.test_set = splits.test
        self.full_train = splits.train  # for reporting only; never handed to a method
        self.rule = get_rule(config.select)
        check_rule_for_split(self.rule, self.val_set if self.rule.split == "val" else self.test_set)

    def _inferred_train_set(self, train: GroupDataset) -> GroupDataset:
        """The training split with the inferred groups of the ``train_groups`` file (labels only otherwise)."""
        groups = load_inferred_groups(self.hparams["train_groups"])
        groups.check_labels(train, self.config.dataset, self.config.data, self.config.seed, self.hparams["train_groups"])
        inferred = groups.apply(train)
        self.group_inference = {"method": groups.method, "params": groups.params, "source": groups.source,
                                "file": str(self.hparams["train_groups"]), "n_attrs": groups.n_attrs}
        if train.g is not None:  # reporting only: the method never sees the true groups
            self.group_inference["quality"] = inference_quality(inferred.g, train.g, train.n_groups, train.group_names)
        return inferred if self.method_cls.needs == "full" else inferred.without_groups()

    # -- building blocks methods may use -------------------------------------------------------
    def new_model(self) -> Classifier:
        """A freshly initialised model of the configured architecture (the small network, or the pretrained
        backbone with a new head), on the device; its augmentation draws are seeded by the run's seed."""
        model = build_network(self.hparams, self.train_set.input_shape, self.train_set.n_classes,
                              self.train_set.inputs, self.config.data.get("image_size") or None,
                              download=self.download, device=self.device, seed=self.config.seed)
        return model.to(self.device, memory_format=memory_format(self.device, self.architecture))

    def new_optimizer(self, model: torch.nn.Module, hparams: dict[str, Any] | None = None) -> torch.optim.Optimizer:
        """The run's optimizer (`make_optimizer` with ``hparams``, default the run's) over ``model``'s
        parameters, for a model a method trains alongside the main one (e.g. LfF's biased model)."""
        return make_optimizer(model, hparams or self.hparams)

    def load_reference_model(self, run_dir: str | Path, subject: str) -> Classifier:
        """The model of a finished run on this run's dataset, data options and seed (e.g. gerne-pseudo's
        ERM reference), on the trainer's device; ``subject`` names the parameter that gave the path."""
        other = load_trained_run(run_dir, self.device, subject=f"hparam:{subject}")
        mine = self.config
        theirs = other.config
        if (theirs.dataset, theirs.data, theirs.seed) != (mine.dataset, mine.data, mine.seed):
            raise GroupRobustError(
                f"{subject}: {other.path} was trained on {theirs.dataset} {theirs.data} seed {theirs.seed}, not on this "
                f"run's {mine.dataset} {mine.data} seed {mine.seed}; its model would not describe this training set",
                subject=f"hparam:{subject}")
        return other.model

    def new_method(self, method_cls: type[Method], data: TrainData, hparams: dict[str, Any] | None = None) -> Method:
        """An instance of ``method_cls`` on ``data`` with the run's loss and a seeded generator."""
        hp = hparams or self.hparams
        generator = torch.Generator().manual_seed(self.config.seed)
        return method_cls(hp, data, make_loss(hp, data.dataset.class_counts()), generator)

    def run_epochs(self, method: Method, model: torch.nn.Module, epochs: int,
                   optimizer: torch.optim.Optimizer | None = None,
                   after_epoch: Callable[[int, float], None] | None = None, stage: str = "train",
                   max_steps: int = 0, every_steps: int = 0,
                   after_steps: Callable[[int, int, float], None] | None = None,
                   checkpoints: LoopCheckpoints | None = None) -> None:
        """The training loop: ``epochs`` passes (or, with ``max_steps``, that many optimizer steps) of
        ``method``'s batches and objective over ``model``.

        Each optimizer step sums the gradients of ``accumulate`` minibatches, clips their global norm to
        ``grad_clip`` (when set) and moves the ``scheduler``'s learning rate (`make_scheduler`).
        ``after_epoch(epoch, mean loss)`` runs after each epoch; with ``every_steps``,
        ``after_steps(step, epoch, mean loss since the last call)`` runs every that many steps and after
        the last one. Raises `DivergedError` naming the first minibatch whose loss is NaN or infinite.
        The losses stay on the device: finiteness is checked every `DIVERGENCE_CHECK_EVERY` minibatches
        and at each epoch's end (one host synchronisation per check, none per step). ``amp`` (mixed
        precision, see `autocast_dtype`) runs each forward pass under ``torch.autocast``, with a
        ``GradScaler`` where the precision is float16 (GPUs without bfloat16). Under torchrun each process
        trains on its part of every global batch (`grouprobust.distributed`); the reported losses are the
        global batch's.

        With ``checkpoints`` (`LoopCheckpoints`) the loop resumes from its ``resume`` state, hands its
        state to ``save`` after every ``every_epochs`` epochs (or ``every_steps`` steps) and, once
        ``stop`` records a signal, at the next step boundary, then raises `RunInterrupted`.
        """
        hp = method.hparams
        optimizer = optimizer or make_optimizer(model, hp)
        accumulate, clip = hp.get("accumulate", 1), hp.get("grad_clip", 0.0)
        planned = max_steps or epochs * math.ceil(method.batches_per_epoch() / accumulate)
        scheduler = make_scheduler(optimizer, hp, planned)
        data = method.data
        device = data.device
        dtype = autocast_dtype(device) if hp.get("amp", False) else None
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        # One autocast object re-entered each step (a disabled one still costs ~5 us a step on a CPU).
        precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        loop = _LoopState(device, stage, data.index_device)
        if checkpoints is not None and checkpoints.resume is not None:
            saved = checkpoints.resume
            loop.load_state_dict(saved["loop"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            if loop.batches is not None and hasattr(method.loss_fn, "on_epoch"):
                method.loss_fn.on_epoch(loop.epoch)  # resumed inside an epoch

        def checkpoint_if_due(due: bool) -> None:
            if loop.finished(epochs, max_steps):
                return  # nothing left to resume
            stop = checkpoints.stop.signum if checkpoints.stop is not None else 0
            if due or stop:
                checkpoints.save({"loop": loop.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": None if scheduler is None else scheduler.state_dict(),
                                  "scaler": scaler.state_dict()})
            if stop:
                raise RunInterrupted(stop, loop.epoch, loop.step)

        model.train()
        trained = wrap_model(model)  # DistributedDataParallel under torchrun, else the model itself
        while True:
            if loop.batches is None:  # between epochs
                if loop.finished(epochs, max_steps):
                    break
                loop.begin_epoch(list(method.batches()))
                if hasattr(method.loss_fn, "on_epoch"):  # epoch-dependent losses (e.g. deferred re-weighting)
                    method.loss_fn.on_epoch(loop.epoch)
                optimizer.zero_grad(set_to_none=True)
            while loop.position < len(loop.batches):
                idx = loop.batches[loop.position]
                loop.position += 1
                local = shard_batch(idx)  # this process's part of the global batch (all of it in one process)
                with precision:
                    loss = global_share(method.loss(trained, method.data.batch(local)), len(local), len(idx))
                loop.recent.append(loss.detach())
                scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
                loop.count += 1
                loop.minibatches += 1
                if len(loop.recent) == DIVERGENCE_CHECK_EVERY:
                    loop.check_recent()
                if loop.minibatches % accumulate:
                    continue
                _optimizer_step(optimizer, scaler, model, clip, scheduler)
                loop.step += 1
                if every_steps and after_steps is not None and loop.step % every_steps == 0:
                    loop.check_recent()
                    after_steps(loop.step, loop.epoch, loop.take_since())
                if max_steps and loop.step >= max_steps:
                    loop.position = len(loop.batches)
                if checkpoints is not None:
                    checkpoint_if_due(bool(checkpoints.every_steps) and loop.step % checkpoints.every_steps == 0)
            if loop.minibatches % accumulate:  # gradients of a last, partial accumulation: one more step
                _optimizer_step(optimizer, scaler, model, clip, scheduler)
                loop.minibatches += accumulate - loop.minibatches % accumulate
                loop.step += 1
            loop.check_recent()
            method.end_epoch(model, loop.epoch)
            if after_epoch is not None:
                after_epoch(loop.epoch, float(mean_over_ranks(loop.total)) / max(loop.count, 1))
            loop.batches = None
            if checkpoints is not None:
                every = checkpoints.every_epochs
                checkpoint_if_due(not checkpoints.every_steps and bool(every) and loop.epoch % every == 0)
        if every_steps and after_steps is not None and loop.step % every_steps:
            after_steps(loop.step, loop.epoch, loop.take_since())

    # -- the run -----------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train, evaluate every ``eval_every`` epochs, select by the rule; returns the `RunResult`.

        The selected model's weights are kept in ``self.selected_state``. With a ``checkpoint`` file the
        run resumes from it when it exists (the result's ``resumed_at`` says from where) and writes it
        every ``checkpoint_every`` epochs (or ``checkpoint_every_steps`` steps): model, optimizer,
        scheduler, grad scaler, the method's state, the loop's position, every RNG state, the history
        and the selection so far, so that the resumed run is the uninterrupted one. While it trains,
        SIGTERM and SIGINT write a checkpoint at the next step boundary and raise `RunInterrupted`.
        """
        start = time.perf_counter()
        seed_everything(self.config.seed)
        data = TrainData(self.train_set, self.device)
        if not data.on_host and data.x.dim() == 4:
            data.x = data.x.contiguous(memory_format=memory_format(self.device, self.architecture))
        method = self.new_method(self.method_cls, data)
        method.setup(TrainerContext(self))
        seed_everything(self.config.seed)
        model = self.new_model()
        self.model = model
        epochs, every = self.hparams["epochs"], self.hparams["eval_every"]
        max_steps, every_steps = self.hparams.get("max_steps", 0), self.hparams.get("eval_every_steps", 0)
        entries: list[dict[str, Any]] = []
        best: dict[str, Any] = {"key": None, "entry": None}
        self.selected_state = None
        point_start = [time.perf_counter()]
        train_counts = self.full_train.group_counts() if self.full_train.has_groups else None
        if self.group_inference is not None:
            self.log({"group_inference": self.group_inference})
        saved = None if self.checkpoint is None else load_checkpoint(self.checkpoint, self.config.run_id)
        elapsed, resumed_at = 0.0, None
        if saved is not None:
            entries.extend(json.loads(saved["history"]))
            for entry in entries:
                self.log(entry)
            if saved["best"] is not None:
                best["entry"] = entries[saved["best"]]
                best["key"] = rule_key(best["entry"], self.rule)
                self.selected_state = {k: v.to(self.device) for k, v in saved["selected_state"].items()}
            model.load_state_dict(saved["model"])
            method.load_state_dict(saved["method"])
            set_module_rng_states(model, saved["module_rng"])
            set_global_rng_states(saved["rng"])
            elapsed = saved["elapsed_s"]
            position = saved["loop"]
            resumed_at = {"epoch": position["epoch"] - (position["batches"] is not None), "step": position["step"]}

        def save(loop_state: dict[str, Any]) -> None:
            """Write the checkpoint: the loop's state with the model's, the method's and the run's (under
            torchrun, rank 0's: every rank holds the same model, optimizer and method state)."""
            if not is_main_process():
                return
            chosen = next((i for i, e in enumerate(entries) if e is best["entry"]), None)
            save_checkpoint(self.checkpoint, {
                "run_id": self.config.run_id, **loop_state, "model": model.state_dict(),
                "method": method.state_dict(), "history": dumps(entries, indent=None), "best": chosen,
                "selected_state": self.selected_state, "module_rng": module_rng_states(model),
                "rng": global_rng_states(self.device), "elapsed_s": elapsed + time.perf_counter() - start})

        def record(entry: dict[str, Any], evaluate_now: bool) -> None:
            """Add the evaluation (when due), keep the best state by the rule, log the history line."""
            if evaluate_now:
                entry["metrics"] = {"val": evaluate(model, self.val_set, self.device, train_counts),
                                    "test": evaluate(model, self.test_set, self.device, train_counts)}
                key = rule_key(entry, self.rule)
                if select_best_index([best["key"], key]) == 1:
                    best["key"], best["entry"] = key, entry
                    self.selected_state = copy.deepcopy(model.state_dict())
            entry["time_s"] = time.perf_counter() - point_start[0]
            point_start[0] = time.perf_counter()
            entries.append(entry)
            self.log(entry)

        def after_epoch(epoch: int, train_loss: float) -> None:
            if not every_steps:
                entry: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
                entry.update(method.epoch_log())
                record(entry, epoch % every == 0 or epoch == last_epoch)
            if self.on_epoch is not None and not every_steps:
                self.on_epoch(epoch, train_loss)

        def after_steps(step: int, epoch: int, train_loss: float) -> None:
            entry: dict[str, Any] = {"step": step, "epoch": epoch, "train_loss": train_loss}
            entry.update(method.epoch_log())
            record(entry, True)
            if self.on_epoch is not None:
                self.on_epoch(step, train_loss)

        # the epoch a run counted in steps ends in (optimizer steps per epoch: minibatches / accumulate)
        last_epoch = epochs if not max_steps else \
            math.ceil(max_steps / math.ceil(method.batches_per_epoch() / self.hparams["accumulate"]))
        # Under torchrun the ranks could see a signal at different steps: it acts there as it always did.
        stoppable = self.checkpoint is not None and not is_distributed()
        with StopRequest() if stoppable else contextlib.nullcontext() as stop:
            checkpoints = None if self.checkpoint is None else LoopCheckpoints(
                save, self.hparams.get("checkpoint_every", 1), self.hparams.get("checkpoint_every_steps", 0), saved,
                stop)
            self.run_epochs(method, model, epochs, after_epoch=after_epoch, max_steps=max_steps,
                            every_steps=every_steps, after_steps=after_steps, checkpoints=checkpoints)
        chosen = best["entry"]
        if chosen is None:
            raise GroupRobustError(f"selection rule {self.rule.name!r} found no value on {self.rule.split}; "
                                   "that split may carry no group labels: pick another rule", subject="select")
        selected = {"rule": self.rule.name, "epoch": chosen["epoch"], "oracle": self.rule.oracle}
        if "step" in chosen:
            selected["step"] = chosen["step"]
        return RunResult.of(
            self.config,
            selected=selected,
            metrics=chosen["metrics"],
            # Test numbers are reported for the selected epoch only; the last epoch gets its validation figures.
            final={"epoch": entries[-1]["epoch"], "val": (entries[-1].get("metrics") or {}).get("val"),
                   **({"step": entries[-1]["step"]} if "step" in entries[-1] else {})},
            train_group_counts=None if train_counts is None else train_counts.tolist(),
            train_empty_groups=self.full_train.empty_groups(),
            method_info={**method.run_info(),
                         **({"group_inference": self.group_inference} if self.group_inference else {})},
            time_s=elapsed + time.perf_counter() - start,
            resumed_at=resumed_at,
        )
