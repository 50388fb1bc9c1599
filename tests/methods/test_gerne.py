"""GERNE (known attributes): its objective's gradient, its two batch distributions and its beta bounds."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import TrainData
from grouprobust.methods.erm import ERM
from grouprobust.methods.gerne import GERNE, beta_range, simulated_proportions
from grouprobust.methods.reweighting import Resample
from grouprobust.runs import run
from grouprobust.training import Trainer, TrainerContext


SMALL = {"n": 400, "n_val": 200, "n_test": 400}


def gerne_on(dataset: str, data: dict, **hparams) -> tuple[GERNE, Trainer]:
    """A set-up `GERNE` instance on the given dataset (the loop's own construction path)."""
    config = resolve_config(dataset, "gerne", seed=0, data=data, hparams=hparams)
    trainer = Trainer(config, load_dataset(dataset, 0, **data), torch.device("cpu"))
    method = trainer.new_method(GERNE, TrainData(trainer.train_set, trainer.device))
    method.setup(TrainerContext(trainer))
    return method, trainer


def gradient(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.ravel() for p in model.parameters()])


def fixed_batch(method: GERNE, trainer: Trainer):
    torch.manual_seed(0)
    model = trainer.new_model()
    idx = next(iter(method.batches()))
    return model, method.data.batch(idx)


def test_beta_minus_one_is_erm_gradient_on_the_biased_batch():
    method, trainer = gerne_on("spurious-gaussian", SMALL, beta=-1.0, c=0.5, batch_size=64)
    model, batch = fixed_batch(method, trainer)
    g_gerne = gradient(model, method.loss(model, batch))
    erm = trainer.new_method(ERM, method.data)
    biased = method.data.batch(batch.idx[32:].cpu())
    g_erm = gradient(model, erm.loss(model, biased))
    torch.testing.assert_close(g_gerne, g_erm, rtol=1e-6, atol=1e-7)
    # ... and not the gradient on the less-biased half (the test can tell them apart)
    g_lb = gradient(model, erm.loss(model, method.data.batch(batch.idx[:32].cpu())))
    assert not torch.allclose(g_gerne, g_lb, atol=1e-4)


def test_c_one_beta_zero_is_group_balanced_resampling():
    method, trainer = gerne_on("spurious-gaussian", SMALL, beta=0.0, c=1.0, batch_size=64)
    resample = trainer.new_method(Resample, method.data, {**trainer.hparams, "balance": "group"})
    # the less-biased draw is group-balanced resampling's distribution (all groups non-empty here)
    torch.testing.assert_close(method.p_lb, resample.sample_probs)
    # and on a fixed batch the objective's gradient is resampling's gradient on that batch
    model, batch = fixed_batch(method, trainer)
    g_gerne = gradient(model, method.loss(model, batch))
    lb = method.data.batch(batch.idx[:32].cpu())
    g_resample = gradient(model, resample.loss(model, lb))
    torch.testing.assert_close(g_gerne, g_resample, rtol=1e-6, atol=1e-7)


def test_extrapolated_objective_is_the_weighted_sum_of_both_halves():
    beta = 0.7
    method, trainer = gerne_on("spurious-gaussian", SMALL, beta=beta, c=0.5, batch_size=64)
    model, batch = fixed_batch(method, trainer)
    per = torch.nn.functional.cross_entropy(model(batch.x), batch.y, reduction="none")
    expected = (1 + beta) * per[:32].mean() - beta * per[32:].mean()
    torch.testing.assert_close(gradient(model, method.loss(model, batch)), gradient(model, expected))


@pytest.mark.parametrize("half", ["lb", "b"])
def test_draws_match_p_b_and_p_lb(half):
    data = {"conflict": 0.05, "copies": 2}
    method, _ = gerne_on("colored-digits", data, beta=0.5, c=0.5, batch_size=256)
    a, y = method.data.dataset.a, method.data.dataset.y
    groups = y * 10 + a
    draws = torch.cat([b[:128] if half == "lb" else b[128:] for _ in range(6) for b in method.batches()]).numpy()
    counts = np.bincount(groups[draws], minlength=100)
    conditional = simulated_proportions(method.counts, 0.5 if half == "lb" else 0.0)
    expected = conditional.ravel() / 10 * len(draws)  # classes uniform
    keep = expected > 0
    assert counts[~keep].sum() == 0  # empty groups are never drawn
    assert chisquare(counts[keep], expected[keep]).pvalue > 1e-3
    # uniform within a group: the samples of the largest group are drawn equally often
    big = np.flatnonzero(groups == np.argmax(counts))
    per_sample = np.bincount(draws, minlength=len(groups))[big]
    assert chisquare(per_sample).pvalue > 1e-3
    # the distributions differ, so a chi-square against the other one must fail
    other = simulated_proportions(method.counts, 0.0 if half == "lb" else 0.5).ravel() / 10 * len(draws)
    assert chisquare(counts[keep], other[keep] * counts[keep].sum() / other[keep].sum()).pvalue < 1e-6


def test_beta_bound_matches_the_paper_and_zeroes_the_majority_weight():
    # C-MNIST at 0.5 % conflict: alpha'' = 0.995, A = 10, c = 0.5 -> beta_max = 1.2235 (paper's ablation)
    counts = np.full((10, 10), 5)
    np.fill_diagonal(counts, 9 * 5 * 199)
    lo, hi = beta_range(counts, 0.5)
    assert lo == -1.0 and hi == pytest.approx(0.995 / (0.5 * 0.895) - 1) and round(hi, 2) == 1.22
    k = lambda beta: 0.5 * (beta + 1)  # noqa: E731
    assert simulated_proportions(counts, k(hi)).min() == pytest.approx(0.0, abs=1e-12)
    assert simulated_proportions(counts, k(hi + 1e-3)).min() < 0
    assert simulated_proportions(counts, k(hi - 1e-3)).min() > 0
    assert all(np.allclose(simulated_proportions(counts, k(b)).sum(axis=1), 1) for b in (-1, 0, hi))
    assert beta_range(np.full((2, 2), 7), 0.3) == (-1.0, math.inf)  # nothing to debias: no upper bound


def test_out_of_range_beta_is_refused_with_the_range(tmp_path):
    config = resolve_config("spurious-gaussian", "gerne", data=SMALL, hparams={"beta": 5.0, "c": 0.5, "epochs": 1})
    counts = load_dataset("spurious-gaussian", 0, **SMALL).train.group_counts().reshape(2, 2)
    hi = beta_range(counts, 0.5)[1]
    with pytest.raises(GroupRobustError, match=rf"\[-1, {hi:.4g}\]") as err:
        run(config, out=tmp_path / "r")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()
    with pytest.raises(GroupRobustError, match=r"outside the admissible range \[-1, "):
        run(resolve_config("spurious-gaussian", "gerne", data=SMALL, hparams={"beta": -1.5, "epochs": 1}))
    with pytest.raises(GroupRobustError, match=r"c must lie in \(0, 1\]"):
        run(resolve_config("spurious-gaussian", "gerne", data=SMALL, hparams={"c": 1.5, "epochs": 1}))


def test_run_logs_the_range_and_needs_train_groups():
    result = run(resolve_config("spurious-gaussian", "gerne", data=SMALL, hparams={"epochs": 1}))
    info = result["method_info"]
    counts = load_dataset("spurious-gaussian", 0, **SMALL).train.group_counts().reshape(2, 2)
    assert info["beta_max"] == pytest.approx(beta_range(counts, 0.5)[1])
    assert np.allclose(np.sum(info["p_ext"], axis=1), 1) and np.min(info["p_ext"]) >= 0
    with pytest.raises(GroupRobustError, match="regime .full."):
        resolve_config("spurious-gaussian", "gerne", regime="val")
