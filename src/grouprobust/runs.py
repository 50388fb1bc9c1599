"""`run`: the one run path. It owns the run directory and writes the run's `RunResult` as ``result.json``.

A loop method trains through `grouprobust.training.Trainer`; a two-stage method first trains its
stage 1 as an ordinary run (by calling `run` again, into ``<run>/stage1``, or reusing a finished
run named by the ``stage1`` hyper-parameter), reads it back with
`grouprobust.trained.load_trained_run` and fits its second stage (`grouprobust.two_stage`).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from grouprobust.checkpoint import checkpoint_path, remove_checkpoint
from grouprobust.config import RunConfig, check_argument_types
from grouprobust.data.disk_cache import cache_dir
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.registry import load_dataset
from grouprobust.distributed import is_main_process, join_torchrun
from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.intervals import annotate_metrics, small_group_warnings
from grouprobust.methods.base import TwoStageMethod
from grouprobust.methods.registry import get_method
from grouprobust.models import pick_device
from grouprobust.output import link_tree, write_atomic
from grouprobust.result import RunResult
from grouprobust.threads import apply_thread_policy
from grouprobust.rundir import RunDirectory
from grouprobust.trained import MODEL_FILE, load_trained_run
from grouprobust.tracking import Tracker, track_run
from grouprobust.training import EpochCallback, Trainer
from grouprobust.two_stage import STAGE1_DIR, WEIGHTS_FILE, fit_stage2, plan_stage1, resolve_stage1_dir


def run(config: RunConfig, out: Path | str | None = None, splits: DatasetSplits | None = None,
        device: torch.device | str | None = None, on_epoch: EpochCallback | None = None,
        save_model: bool = True, tracker: Tracker | None = None, wait: bool = False,
        download: bool = False, keep_checkpoints: bool = False) -> RunResult:
    """Run one resolved config and write its run directory at ``out`` (if given); returns its `RunResult`.

    If ``out`` already holds this finished run, its stored result is returned without training
    (``result.reused`` is True). A diverging run is written with ``error.json`` and raises
    `DivergedError`; an interrupted one leaves nothing at ``out``. A loop method's run at ``out`` writes
    checkpoints beside it (`grouprobust.checkpoint.checkpoint_path`) and resumes from the latest when
    run again; SIGTERM or SIGINT while it trains writes one and raises `RunInterrupted`. They are
    removed when the run finishes or diverges, unless ``keep_checkpoints``. ``on_epoch(epoch, train_loss)``
    reports progress (a two-stage method's stage 1 reports through it too). ``splits`` replaces
    the dataset built from the config (loop methods only). ``tracker`` (`grouprobust.tracking`) receives
    the config, every history entry and the result of a run written at ``out`` (not of a reused run,
    nor of a two-stage method's stage 1); its failures are logged and never stop the run. ``out`` is
    claimed with a file lock for the whole run: if another process is writing it, `RunBusyError` is
    raised at once, or with ``wait`` True the call waits for it (and then reuses its result if it was
    this very run). torch's CPU threads are set by `grouprobust.threads.apply_thread_policy` (the
    user's own setting wins). ``download`` lets a backbone's pretrained weights be fetched from the
    network when no local copy exists (never otherwise).
    """
    check_argument_types(config=(config, RunConfig), out=(out, (str, os.PathLike)), splits=(splits, DatasetSplits),
                         device=(device, (str, torch.device)), wait=(wait, bool), save_model=(save_model, bool),
                         keep_checkpoints=(keep_checkpoints, bool))
    if on_epoch is not None and not callable(on_epoch):
        raise GroupRobustError(f"on_epoch must be a function (epoch, train_loss), got {type(on_epoch).__name__}",
                               subject="on_epoch")
    apply_thread_policy()
    method_cls = get_method(config.method)
    # under torchrun: the process group and this rank's device; only rank 0 writes the run and tracks it
    device = join_torchrun(pick_device(device), config.method, method_cls.distributed)
    # every rank resumes from the run's checkpoint; rank 0 alone writes it
    checkpoint = None if out is None else checkpoint_path(out, config.run_id)
    if not is_main_process():
        out, tracker = None, None
    two_stage = issubclass(method_cls, TwoStageMethod)
    if two_stage and splits is not None:
        raise GroupRobustError(f"method {config.method!r} builds its data from the dataset config; call it without "
                               "splits")
    if out is None and tracker is not None:
        raise GroupRobustError("tracking needs a run directory; give out", subject="track")
    if out is None:
        if not two_stage:  # nothing to write: train and return
            splits = splits or load_dataset(config.dataset, config.seed, **config.data)
            result = Trainer(config, splits, device, on_epoch=on_epoch, download=download,
                             checkpoint=checkpoint).fit()
            annotate(result, data_notes(splits))
            return result
        with tempfile.TemporaryDirectory() as tmp:  # a two-stage run reads its stage 1 back from disk
            return run(config, Path(tmp) / "run", device=device, on_epoch=on_epoch, save_model=save_model,
                       download=download)
    writer = RunDirectory(Path(out), config.to_dict(device))
    if not wait:  # read without the claim: a finished run is reused on a read-only disk too, a refusal writes nothing
        stored = writer.reusable_result()
        if stored is not None:
            return RunResult.from_dict(stored)
    writer.check_writable()
    with writer.claim(wait=wait):
        return _run_claimed(config, writer, splits, device, on_epoch, save_model, two_stage, tracker, download,
                            keep_checkpoints)


def _run_claimed(config: RunConfig, writer: RunDirectory, splits: DatasetSplits | None, device: torch.device,
                 on_epoch: EpochCallback | None, save_model: bool, two_stage: bool,
                 tracker: Tracker | None, download: bool, keep_checkpoints: bool) -> RunResult:
    """The body of `run` once the run directory is claimed: reuse a finished run or write a new one."""
    stored = writer.reusable_result()
    if stored is not None:
        return RunResult.from_dict(stored)
    start = time.perf_counter()
    reuse = resolve_stage1_dir(config.hparams["stage1"]) if two_stage and config.hparams["stage1"] else None
    if reuse is None and not two_stage:
        splits = splits or load_dataset(config.dataset, config.seed, **config.data)
    with writer.writing(), track_run(tracker, config.to_dict(device), writer) as tracked:
        if two_stage:
            if reuse is None:
                plan = plan_stage1(config)
                stage1_dir = writer.file(STAGE1_DIR)
                # A fine-tuned stage 1 is trained once into the shared store (methods and points wait for it)
                # and linked into the run; a small one is trained inside the run, whose own checkpoints
                # would otherwise be published with it.
                shared = bool(config.hparams.get("backbone"))
                target = cache_dir("stage1") / plan.config.run_id if shared else stage1_dir
                run(plan.config, target, splits=plan.splits, device=device, on_epoch=on_epoch, download=download,
                    wait=shared, keep_checkpoints=keep_checkpoints and shared)
                plan.write_holdout(target)
                if shared:
                    link_tree(target, stage1_dir)
            stage1 = load_trained_run(reuse or stage1_dir, device, subject="stage1")
            result = fit_stage2(config, stage1, tracked.log, writer.file(WEIGHTS_FILE), reused_stage1=reuse is not None)
            result.time_s = time.perf_counter() - start
            annotate(result, (stage1.result or {}).get("notes", []))
        else:
            checkpoint = checkpoint_path(writer.path, config.run_id)
            trainer = Trainer(config, splits, device, log=tracked.log, on_epoch=on_epoch, download=download,
                              checkpoint=checkpoint)
            try:
                result = trainer.fit()
            except DivergedError:  # resuming would diverge again
                if not keep_checkpoints:
                    remove_checkpoint(checkpoint)
                raise
            annotate(result, data_notes(splits))
            if save_model and trainer.selected_state is not None:
                state = trainer.selected_state
                write_atomic(writer.file(MODEL_FILE), lambda fh: torch.save(state, fh))
        tracked.finish(result.to_dict())
        writer.finish(result.to_dict())
    if not two_stage and not keep_checkpoints:
        remove_checkpoint(checkpoint)
    return result


def data_notes(splits: DatasetSplits) -> list[str]:
    """What the data says about itself for the result's notes: how a table's splits were drawn, if it says."""
    note = splits.meta.get("split_note")
    return [note] if note else []


def annotate(result: RunResult, notes: list[str]) -> None:
    """Give ``result`` its 95% intervals and class and attribute names (`grouprobust.intervals.annotate_metrics`,
    every split; a loop run's are already there), its small-group warnings and the data ``notes``."""
    for metrics in result.metrics.values():
        if isinstance(metrics, dict):
            annotate_metrics(metrics)
    result.warnings = [*small_group_warnings(result.metrics), *result.method_info.get("warnings", [])]
    result.notes = list(notes)

