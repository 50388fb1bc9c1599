"""ERM epoch time of grouprobust's loop vs a bare hand-written PyTorch loop (same model, data, batches).

Prints, per dataset, the median epoch time of each and their ratio (target: <= 1.10).
Run: .venv/bin/python benchmarks/loop_overhead.py
"""

from __future__ import annotations

import statistics
import time

import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.methods.base import TrainData
from grouprobust.methods.erm import ERM
from grouprobust.training import Trainer, make_optimizer, seed_everything

REPEATS = 7


def bare_epoch(model, opt, x, y, perm, batch_size) -> None:
    for idx in perm.split(batch_size):
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def measure(dataset: str, data: dict) -> tuple[float, float]:
    cfg = resolve_config(dataset, "erm", 0, data=data)
    splits = load_dataset(dataset, 0, **cfg.data)
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    data_t = TrainData(trainer.train_set, trainer.device)
    ours, bare = [], []
    for r in range(REPEATS):
        # the project's loop: one epoch through Trainer.run_epochs with the ERM method
        seed_everything(r)
        model = trainer.new_model()
        method = trainer.new_method(ERM, data_t)
        method.generator.manual_seed(r)
        t0 = time.perf_counter()
        trainer.run_epochs(method, model, 1)
        ours.append(time.perf_counter() - t0)
        # bare loop: the same initial model, optimizer and permutation
        seed_everything(r)
        model = trainer.new_model()
        opt = make_optimizer(model, cfg.hparams)
        perm = torch.randperm(data_t.n, generator=torch.Generator().manual_seed(r))
        t0 = time.perf_counter()
        bare_epoch(model, opt, data_t.x, data_t.y, perm, int(cfg.hparams["batch_size"]))
        bare.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    print(f"{'dataset':<20}{'ours s/epoch':>14}{'bare s/epoch':>14}{'ratio':>8}")
    for dataset, data in (("colored-digits", {}), ("spurious-gaussian", {"n": 20000})):
        ours, bare = measure(dataset, data)
        print(f"{dataset:<20}{ours:>14.4f}{bare:>14.4f}{ours / bare:>8.3f}")
    print("target: ratio <= 1.10")


if __name__ == "__main__":
    main()
