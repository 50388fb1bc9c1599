"""The class-imbalance family: focal, LDAM, balanced softmax, and the per-class reweightings
(square root, class-balanced, deferred re-weighting) that every loss takes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grouprobust.config import resolve_config
from grouprobust.errors import GroupRobustError
from grouprobust.losses import (CLASS_WEIGHT_PARAMS, LOSSES, ClassWeightedLoss, class_balanced_weights, ldam_margins,
                                make_loss, sqrt_class_weights)
from grouprobust.methods.base import TrainData
from grouprobust.methods.erm import ERM
from grouprobust.data.registry import load_dataset
from grouprobust.params import resolve_params
from grouprobust.training import Trainer
from cli_runner import cli as _cli

COUNTS = np.array([1000, 100, 10, 1])


def hp(loss: str, **values) -> dict:
    """Resolved hyper-parameters of ``loss`` (its own and the class-weight ones)."""
    return {"loss": loss, **resolve_params(LOSSES[loss].params, values)}


def batch(n: int = 64, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, k, generator=gen, dtype=torch.float64), torch.randint(0, k, (n,), generator=gen)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_examples():
    z, y = batch()
    ce = F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(make_loss(hp("focal", focal_gamma=0.0), COUNTS)(z, y), ce, rtol=0, atol=1e-12)
    focal = make_loss(hp("focal", focal_gamma=2.0), COUNTS)(z, y)
    p = torch.exp(-ce)
    torch.testing.assert_close(focal, (1 - p) ** 2 * ce)
    assert (focal <= ce + 1e-12).all() and (focal < ce).any()


def test_ldam_margins_follow_the_inverse_fourth_root_of_the_class_counts():
    m = ldam_margins(COUNTS, max_m=0.5).numpy()
    assert m.max() == pytest.approx(0.5) and np.argmax(m) == 3  # the smallest class gets the largest margin
    np.testing.assert_allclose(m, 0.5 * (COUNTS / COUNTS.min()) ** -0.25)
    np.testing.assert_allclose(m[0] / m[2], (1000 / 10) ** -0.25)


def test_ldam_is_cross_entropy_with_the_true_logit_lowered_by_its_margin_then_scaled():
    z, y = batch()
    fn = make_loss(hp("ldam", ldam_max_m=0.5, ldam_s=10.0), COUNTS)
    m = ldam_margins(COUNTS, 0.5)
    shifted = z.clone()
    shifted[torch.arange(len(y)), y] -= m[y]
    torch.testing.assert_close(fn(z, y), F.cross_entropy(10.0 * shifted, y, reduction="none"))


def test_balanced_softmax_is_cross_entropy_on_logits_plus_log_prior():
    z, y = batch()
    prior = COUNTS / COUNTS.sum()
    expected = F.cross_entropy(z + torch.as_tensor(np.log(prior)), y, reduction="none")
    torch.testing.assert_close(make_loss(hp("balanced-softmax"), COUNTS)(z, y), expected)
    same = make_loss(hp("logit-adjusted", la_form="additive", la_tau=1.0), COUNTS)(z, y)
    torch.testing.assert_close(same, expected)


def test_class_balanced_weights_follow_the_inverse_effective_number():
    beta = 0.99
    w = class_balanced_weights(COUNTS, beta)
    raw = (1 - beta) / (1 - beta ** COUNTS.astype(float))
    np.testing.assert_allclose(w, raw * len(COUNTS) / raw.sum())
    assert w.sum() == pytest.approx(len(COUNTS)) and np.all(np.diff(w) > 0)
    np.testing.assert_allclose(class_balanced_weights(COUNTS, 0.0), np.ones(4))  # beta = 0: no reweighting
    inv = 1 / COUNTS
    np.testing.assert_allclose(class_balanced_weights(COUNTS, 1 - 1e-9), inv * 4 / inv.sum(), rtol=1e-4)


def test_sqrt_weights_follow_the_inverse_square_root_and_empty_classes_get_none():
    w = sqrt_class_weights(np.array([400, 100, 0]))
    assert w[2] == 0 and w[1] / w[0] == pytest.approx(2.0) and w.sum() == pytest.approx(2.0)


@pytest.mark.parametrize("loss", ["ce", "focal", "ldam"])
def test_class_weights_multiply_each_examples_loss_by_its_class_weight(loss):
    z, y = batch()
    base = make_loss(hp(loss), COUNTS)(z, y)
    for kind, w in (("sqrt", sqrt_class_weights(COUNTS)), ("cb", class_balanced_weights(COUNTS, 0.999))):
        weighted = make_loss(hp(loss, class_weights=kind, cb_beta=0.999), COUNTS)(z, y)
        torch.testing.assert_close(weighted, base * torch.as_tensor(w)[y])


def test_drw_weights_switch_on_after_drw_start_epochs():
    z, y = batch()
    fn = make_loss(hp("ce", class_weights="drw", drw_start=3, cb_beta=0.999), COUNTS)
    assert isinstance(fn, ClassWeightedLoss)
    ce = F.cross_entropy(z, y, reduction="none")
    cb = torch.as_tensor(class_balanced_weights(COUNTS, 0.999))
    for epoch in (1, 2, 3):
        fn.on_epoch(epoch)
        torch.testing.assert_close(fn(z, y), ce)
    fn.on_epoch(4)
    torch.testing.assert_close(fn(z, y), ce * cb[y])


def test_the_training_loop_tells_the_loss_the_epoch():
    config = resolve_config("spurious-gaussian", "erm", 0, {"n": 200, "n_val": 100, "n_test": 100},
                            {"epochs": 4, "batch_size": 64, "class_weights": "drw", "drw_start": 2})
    trainer = Trainer(config, load_dataset("spurious-gaussian", 0, **config.data))
    method = trainer.new_method(ERM, TrainData(trainer.train_set, trainer.device))
    seen = []
    trainer.run_epochs(method, trainer.new_model(), 4, after_epoch=lambda e, _: seen.append(method.loss_fn.active))
    assert seen == [False, False, True, True]


def test_every_loss_declares_the_class_weight_parameters_with_constraints():
    for spec in LOSSES.values():
        assert set(CLASS_WEIGHT_PARAMS) <= set(spec.params), spec.name
    with pytest.raises(GroupRobustError, match="class_weights=inverse is not one of: none, sqrt, cb, drw"):
        resolve_config("spurious-gaussian", "erm", hparams={"class_weights": "inverse"})
    with pytest.raises(GroupRobustError, match="cb_beta must lie in"):
        resolve_config("spurious-gaussian", "erm", hparams={"class_weights": "cb", "cb_beta": 1.0})
    with pytest.raises(GroupRobustError, match="focal_gamma must lie in") as err:
        resolve_config("spurious-gaussian", "erm", hparams={"loss": "focal", "focal_gamma": -1})
    assert err.value.subject == "hparam:focal_gamma"


def test_losses_command_lists_every_loss_and_its_parameters(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, stdout, _ = _cli(["losses"], capsys)
    assert code == 0
    for name in LOSSES:
        assert name in stdout
    for text in ("focal_gamma = 1.0", "focal_gamma >= 0", "ldam_max_m > 0", "class_weights = 'none'",
                 "one of: none, sqrt, cb, drw", "0 <= cb_beta < 1", "drw_start >= 1"):
        assert text in stdout, text


def test_a_bad_class_weight_on_the_command_line_is_one_line_naming_the_flag(tmp_path, capsys):
    code, _, err = _cli(["train", "-d", "spurious-gaussian", "-m", "erm", "--set", "class_weights=inverse",
                         "-o", str(tmp_path / "run")], capsys)
    assert code == 2 and "--set class_weights" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
