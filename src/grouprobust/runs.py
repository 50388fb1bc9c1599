"""`run`: the one run path. It owns the run directory and writes the run's `RunResult` as ``result.json``.

A loop method trains through `grouprobust.training.Trainer`; a two-stage method first trains its
stage 1 as an ordinary run (by calling `run` again, into ``<run>/stage1``, or reusing a finished
run named by the ``stage1`` hyper-parameter), reads it back with
`grouprobust.trained.load_trained_run` and fits its second stage (`grouprobust.two_stage`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from grouprobust.config import RunConfig
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.registry import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import TwoStageMethod
from grouprobust.methods.registry import get_method
from grouprobust.models import pick_device
from grouprobust.result import RunResult
from grouprobust.threads import apply_thread_policy
from grouprobust.rundir import RunDirectory
from grouprobust.trained import MODEL_FILE, load_trained_run
from grouprobust.training import EpochCallback, Trainer
from grouprobust.two_stage import STAGE1_DIR, WEIGHTS_FILE, fit_stage2, plan_stage1, resolve_stage1_dir


def run(config: RunConfig, out: Path | str | None = None, splits: DatasetSplits | None = None,
        device: torch.device | str | None = None, on_epoch: EpochCallback | None = None,
        save_model: bool = True) -> RunResult:
    """Run one resolved config and write its run directory at ``out`` (if given); returns its `RunResult`.

    If ``out`` already holds this finished run, its stored result is returned without training
    (``result.reused`` is True). A diverging run is written with ``error.json`` and raises
    `DivergedError`; an interrupted one leaves nothing at ``out``. ``on_epoch(epoch, train_loss)``
    reports progress (a two-stage method's stage 1 reports through it too). ``splits`` replaces
    the dataset built from the config (loop methods only). torch's CPU threads are set by
    `grouprobust.threads.apply_thread_policy` (the user's own setting wins).
    """
    apply_thread_policy()
    device = pick_device(device)
    method_cls = get_method(config.method)
    two_stage = issubclass(method_cls, TwoStageMethod)
    if two_stage and splits is not None:
        raise GroupRobustError(f"method {config.method!r} builds its data from the dataset config; call it without "
                               "splits")
    if out is None:
        if not two_stage:  # nothing to write: train and return
            return Trainer(config, splits or load_dataset(config.dataset, config.seed, **config.data), device,
                           on_epoch=on_epoch).fit()
        with tempfile.TemporaryDirectory() as tmp:  # a two-stage run reads its stage 1 back from disk
            return run(config, Path(tmp) / "run", device=device, on_epoch=on_epoch, save_model=save_model)
    writer = RunDirectory(Path(out), config.to_dict())
    stored = writer.reusable_result()
    if stored is not None:
        return RunResult.from_dict(stored)
    start = time.perf_counter()
    reuse = resolve_stage1_dir(config.hparams["stage1"]) if two_stage and config.hparams["stage1"] else None
    if reuse is None and not two_stage:
        splits = splits or load_dataset(config.dataset, config.seed, **config.data)
    with writer.writing():
        if two_stage:
            if reuse is None:
                plan = plan_stage1(config)
                stage1_dir = writer.file(STAGE1_DIR)
                run(plan.config, stage1_dir, splits=plan.splits, device=device, on_epoch=on_epoch)
                plan.write_holdout(stage1_dir)
            stage1 = load_trained_run(reuse or stage1_dir, device, subject="stage1")
            result = fit_stage2(config, stage1, writer.log, writer.file(WEIGHTS_FILE), reused_stage1=reuse is not None)
            result.time_s = time.perf_counter() - start
        else:
            trainer = Trainer(config, splits, device, log=writer.log, on_epoch=on_epoch)
            result = trainer.fit()
            if save_model and trainer.selected_state is not None:
                torch.save(trainer.selected_state, writer.file(MODEL_FILE))
        writer.finish(result.to_dict())
    return result
