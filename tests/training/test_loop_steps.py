"""The loop counted in optimizer steps: max_steps, evaluation every N steps, accumulation, clipping, schedules."""

import json
import math

import pytest
import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.methods.base import TrainData
from grouprobust.methods.erm import ERM
from grouprobust.runs import run
from grouprobust.training import Trainer, make_scheduler, seed_everything

DATA = {"n": 384, "n_val": 200, "n_test": 200}


def _history(path):
    return [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]


def test_max_steps_with_evaluation_every_n_steps_selects_among_those_points(tmp_path):
    cfg = resolve_config("spurious-gaussian", "erm", data=DATA,
                         hparams={"batch_size": 64, "max_steps": 14, "eval_every_steps": 4, "epochs": 1})
    result = run(cfg, tmp_path / "r")
    history = _history(tmp_path / "r")
    assert [h["step"] for h in history] == [4, 8, 12, 14]  # and at the last step
    assert [h["epoch"] for h in history] == [1, 2, 2, 3]  # 6 steps an epoch: step 14 is in epoch 3
    best = max(h["metrics"]["val"]["worst_group_acc"] for h in history)
    chosen = next(h for h in history if h["step"] == result["selected"]["step"])
    assert chosen["metrics"]["val"]["worst_group_acc"] == best
    assert result["final"]["step"] == 14


def test_max_steps_evaluated_by_epochs_still_evaluates_its_last_partial_epoch(tmp_path):
    cfg = resolve_config("spurious-gaussian", "erm", data=DATA,
                         hparams={"batch_size": 64, "max_steps": 9, "epochs": 1})
    run(cfg, tmp_path / "r")
    history = _history(tmp_path / "r")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("metrics" in h for h in history)


def _trained_parameters(hparams):
    cfg = resolve_config("spurious-gaussian", "erm", data=DATA,
                         hparams={"model": "linear", "optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "epochs": 1,
                                  **hparams})
    splits = load_dataset(cfg.dataset, cfg.seed, **cfg.data)
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    seed_everything(0)
    model = trainer.new_model()
    data = TrainData(trainer.train_set, trainer.device)
    method = trainer.new_method(ERM, data)
    trainer.run_epochs(method, model, cfg.hparams["epochs"])
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulated_half_batches_take_the_steps_of_the_whole_batch():
    whole = _trained_parameters({"batch_size": 64})
    halves = _trained_parameters({"batch_size": 32, "accumulate": 2})
    # same shuffle (the sampler's seed), 6 steps of 64 examples each way; the gradient of the mean over 64
    # equals the mean of the two halves' gradients
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_trained_parameters({"batch_size": 32}), whole, atol=1e-4)


def test_clipping_bounds_every_step_by_lr_times_the_clip():
    start = _trained_parameters({"batch_size": 64, "epochs": 1, "lr": 1e-12})  # ~ the initial parameters
    clipped = _trained_parameters({"batch_size": 64, "grad_clip": 0.01})
    free = _trained_parameters({"batch_size": 64})
    steps = 6
    assert float((clipped - start).norm()) <= steps * 0.1 * 0.01 + 1e-6
    assert float((free - start).norm()) > steps * 0.1 * 0.01 * 2


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_warm_up_linearly_then_decay_to_zero(kind):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = make_scheduler(optimizer, {"scheduler": kind, "warmup_frac": 0.2}, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == pytest.approx([0.5, 1.0])  # two warm-up steps
    assert lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))  # then never rises
    expected_mid = 1 - 3 / 8 if kind == "linear" else 0.5 * (1 + math.cos(math.pi * 3 / 8))
    assert lrs[5] == pytest.approx(expected_mid)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert make_scheduler(optimizer, {"scheduler": "none"}, 10) is None


def test_parameters_added_later_keep_existing_run_ids():
    plain = resolve_config("spurious-gaussian", "erm", data=DATA)
    assert "max_steps" in plain.hparams  # resolved and recorded ...
    import hashlib
    from dataclasses import asdict
    fields = asdict(plain)
    for name in ("backbone", "weights", "finetune", "lora_rank", "lora_alpha", "augment", "max_steps",
                 "eval_every_steps", "accumulate", "grad_clip", "scheduler", "warmup_frac", "checkpoint_every",
                 "checkpoint_every_steps"):
        del fields["hparams"][name]
    del fields["inputs"]
    old_id = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert plain.run_id == old_id  # ... but out of the id at its default
    assert resolve_config("spurious-gaussian", "erm", data=DATA, hparams={"max_steps": 5}).run_id != old_id
