"""JTT's error set, label regimes, and that val/none methods never read training group labels."""

import dataclasses

import numpy as np
import pytest
import torch

from grouprobust.cli import main
from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods import TrainData, get_method
from grouprobust.training import Trainer, TrainerContext, seed_everything

TINY = {"n": 400, "n_val": 200, "n_test": 400}


def test_jtt_upsamples_exactly_the_stage1_errors_of_an_erm_model():
    cfg = resolve_config("spurious-gaussian", "jtt", 0, TINY, {"stage1_epochs": 2, "lambda_up": 5}, regime="val")
    splits = load_dataset("spurious-gaussian", 0, **TINY)
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    seed_everything(0)
    data = TrainData(trainer.train_set, trainer.device)
    assert data.g is None  # regime val: no training groups for the method
    method = trainer.new_method(get_method("jtt"), data)
    method.setup(TrainerContext(trainer))

    # stage 1 is plain ERM: the same parameters as a 2-epoch ERM run with the same seed
    erm = Trainer(resolve_config("spurious-gaussian", "erm", 0, TINY, {"epochs": 2}), splits, torch.device("cpu"))
    erm.fit()
    for p, q in zip(method.stage1_model.parameters(), erm.model.parameters()):
        assert torch.equal(p, q)

    with torch.no_grad():
        wrong = (method.stage1_model(data.x).argmax(1) != data.y).numpy()
    assert 0 < wrong.sum() < len(wrong) / 2
    np.testing.assert_array_equal(method.error_set.numpy(), np.flatnonzero(wrong))
    drawn = np.bincount(torch.cat(list(method.batches())).numpy(), minlength=data.n)
    np.testing.assert_array_equal(drawn, 1 + 4 * wrong)

    info = method.run_info()
    assert info["error_set_size"] == int(wrong.sum())
    # reporting only: overlap with the true minority groups, from the full train split
    minority = np.isin(splits.train.g, [1, 2])
    assert info["minority_groups"] == ["y=0,a=1", "y=1,a=0"]
    assert info["error_set_minority_precision"] == pytest.approx(minority[wrong].mean())


def shuffled_train_groups(splits, seed=0):
    rng = np.random.default_rng(seed)
    train = splits.train
    poisoned = dataclasses.replace(train, a=rng.permutation(train.a), g=None)
    poisoned.__post_init__()
    assert not np.array_equal(poisoned.g, train.g)
    return dataclasses.replace(splits, train=poisoned)


def fit(method, splits, regime, **hparams):
    cfg = resolve_config("spurious-gaussian", method, 0, TINY, {"epochs": 4, **hparams}, regime=regime)
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    return trainer.fit(), trainer.selected_state


@pytest.mark.parametrize("method,regime,hparams", [
    ("jtt", "val", {"stage1_epochs": 1}), ("erm", "none", {}), ("cvar-dro", "val", {}),
])
def test_val_and_none_methods_ignore_shuffled_training_group_labels(method, regime, hparams):
    splits = load_dataset("spurious-gaussian", 0, **TINY)
    clean, clean_state = fit(method, splits, regime, **hparams)
    poisoned, poisoned_state = fit(method, shuffled_train_groups(splits), regime, **hparams)
    # the model is bit-identical, so is everything measured on val/test (reporting metrics that
    # reweight by the training group frequencies are left out: those frequencies were shuffled)
    assert all(torch.equal(clean_state[k], poisoned_state[k]) for k in clean_state)
    assert clean["selected"] == poisoned["selected"]
    for split in ("val", "test"):
        for key in ("worst_group_acc", "group_balanced_acc", "avg_acc", "per_group"):
            assert clean["metrics"][split][key] == poisoned["metrics"][split][key]


def test_shuffled_training_groups_do_change_a_full_method():
    splits = load_dataset("spurious-gaussian", 0, **TINY)
    clean, _ = fit("groupdro", splits, "full")
    poisoned, _ = fit("groupdro", shuffled_train_groups(splits), "full")
    assert clean["metrics"] != poisoned["metrics"]


@pytest.mark.parametrize("method,regime,ok", [
    ("groupdro", "full", True), ("groupdro", "val", False), ("iw", "none", False), ("resample", "val", False),
    ("jtt", "val", True), ("jtt", "none", False), ("cvar-dro", "none", True), ("chi2-dro", "none", True),
])
def test_regime_must_feed_the_method(method, regime, ok):
    if ok:
        assert resolve_config("spurious-gaussian", method, regime=regime).method == method
    else:
        with pytest.raises(GroupRobustError, match=f"regime {get_method(method).needs!r}"):
            resolve_config("spurious-gaussian", method, regime=regime)


def test_cli_refuses_a_regime_that_cannot_feed_the_method(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-d", "spurious-gaussian", "-m", "groupdro", "--regime", "val", "-o", str(out), "-q"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "groupdro" in err and "--regime full" in err
    assert not out.exists()
