"""GERNE with an adaptive extrapolation factor: beta stays inside [beta_floor, beta] within [-1, beta_max],
follows the loss gap, and is logged every epoch."""

import json
import math

import numpy as np
import pytest
import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import TrainData
from grouprobust.methods.gerne import GERNE, adaptive_beta, beta_range, count_table
from grouprobust.runs import run
from grouprobust.training import Trainer, TrainerContext

SMALL = {"n": 400, "n_val": 200, "n_test": 200}


def test_adaptive_beta_is_the_floor_at_no_gap_the_ceiling_past_the_scale_and_never_outside():
    assert adaptive_beta(0.0, -0.5, 1.2, 0.5) == -0.5
    assert adaptive_beta(0.25, 0.0, 1.2, 0.5) == pytest.approx(0.6)
    assert adaptive_beta(3.0, 0.0, 1.2, 0.5) == 1.2
    rng = np.random.default_rng(0)
    gaps = np.r_[rng.normal(0, 5, 500), [math.inf, -math.inf, math.nan, 1e300, -1e300]]
    for gap in gaps:
        assert -0.5 <= adaptive_beta(float(gap), -0.5, 1.2, float(rng.uniform(0.01, 2))) <= 1.2
    assert adaptive_beta(math.nan, 0.1, 1.0, 0.5) == 0.1


def _history(path):
    return [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("signal", ["train", "val"])
def test_adaptive_beta_never_leaves_the_admissible_range_and_is_logged_every_epoch(signal, tmp_path):
    splits = load_dataset("spurious-gaussian", 0, **SMALL)
    counts = count_table(splits.train.y, splits.train.a, splits.train.n_classes, splits.train.n_attrs)
    lo, hi = beta_range(counts, 0.5)
    # ceiling at the bound itself and a floor at ERM: the widest range the schedule can be given
    hparams = {"epochs": 4, "batch_size": 32, "c": 0.5, "beta": hi, "beta_floor": -1.0, "beta_gap_scale": 0.05,
               "beta_schedule": "adaptive", "beta_signal": signal}
    result = run(resolve_config("spurious-gaussian", "gerne", 0, SMALL, hparams), tmp_path / "run", save_model=False)
    history = _history(tmp_path / "run")
    assert len(history) == 4
    seen = []
    for entry in history:
        g = entry["gerne"]
        assert g["beta_schedule"] == "adaptive" and g["beta_ceiling"] == pytest.approx(hi)
        assert lo - 1e-12 <= g["beta_epoch_min"] <= g["beta_epoch_max"] <= hi + 1e-12
        assert g["beta_epoch_min"] - 1e-12 <= g["beta_epoch_mean"] <= g["beta_epoch_max"] + 1e-12
        assert lo - 1e-12 <= g["beta"] <= hi + 1e-12
        seen += [g["beta_epoch_min"], g["beta_epoch_max"]]
    assert history[0]["gerne"]["beta_epoch_min"] == -1.0  # training begins at the floor
    assert max(seen) > -1.0, "beta never moved off its floor"
    assert lo <= result["method_info"]["beta"] <= hi


def test_the_val_signal_weights_validation_group_losses_as_the_two_batches():
    config = resolve_config("spurious-gaussian", "gerne", 0, SMALL,
                            {"beta_schedule": "adaptive", "beta_signal": "val", "c": 0.5, "beta": 1.0})
    trainer = Trainer(config, load_dataset("spurious-gaussian", 0, **SMALL))
    method = trainer.new_method(GERNE, TrainData(trainer.train_set, trainer.device))
    method.setup(TrainerContext(trainer))
    torch.manual_seed(0)
    model = trainer.new_model()
    loss_lb, loss_b = method._validation_losses(model)
    val = trainer.val_set
    with torch.no_grad():
        per = torch.nn.functional.cross_entropy(model(torch.as_tensor(val.x, device=trainer.device)),
                                                torch.as_tensor(val.y, device=trainer.device), reduction="none")
    per = per.double().cpu().numpy()
    group = np.array([per[val.g == g].mean() for g in range(4)]).reshape(2, 2)
    alpha = counts = method.counts / method.counts.sum(axis=1, keepdims=True)
    p_lb = alpha + 0.5 * (0.5 - alpha)
    assert loss_b == pytest.approx(float((alpha * group).sum(axis=1).mean()))
    assert loss_lb == pytest.approx(float((p_lb * group).sum(axis=1).mean()))
    assert counts.shape == (2, 2)


def test_bad_adaptive_settings_are_refused_with_the_parameter_named(tmp_path):
    with pytest.raises(GroupRobustError, match="beta_floor=0.9 is above the adaptive ceiling beta=0.5") as err:
        run(resolve_config("spurious-gaussian", "gerne", 0, SMALL,
                           {"epochs": 1, "beta_schedule": "adaptive", "beta": 0.5, "beta_floor": 0.9}), tmp_path / "a")
    assert err.value.subject == "hparam:beta_floor" and not (tmp_path / "a").exists()
    with pytest.raises(GroupRobustError, match="beta_signal=val needs validation groups") as err:
        run(resolve_config("spurious-gaussian", "gerne-pseudo", 0, SMALL,
                           {"epochs": 1, "erm_epochs": 1, "beta_schedule": "adaptive", "beta_signal": "val"},
                           regime="val"), tmp_path / "b")
    assert err.value.subject == "hparam:beta_signal"
    with pytest.raises(GroupRobustError, match="beta_schedule=cosine is not one of: fixed, adaptive"):
        resolve_config("spurious-gaussian", "gerne", 0, SMALL, {"beta_schedule": "cosine"})
