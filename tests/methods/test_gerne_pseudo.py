"""gerne-pseudo (unknown training attributes): the threshold rule, no use of true train groups, reporting."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import TrainData
from grouprobust.methods.gerne import (GERNEPseudo, pseudo_attribute_quality,
                                       pseudo_attributes, true_conflicting)
from grouprobust.models import predict_logits
from grouprobust.runs import run
from grouprobust.training import Trainer, TrainerContext


SMALL = {"n": 400, "n_val": 200, "n_test": 400}
FAST = {"epochs": 2, "erm_epochs": 3, "lr": 0.01}


def test_threshold_rule():
    conf = np.array([0.2, 0.5, 0.51, 0.9, 0.99])
    assert pseudo_attributes(conf, 0.5).tolist() == [1, 1, 0, 0, 0]  # aligned only above the threshold
    assert pseudo_attributes(conf, 0.95).tolist() == [1, 1, 1, 1, 0]


def test_precision_recall_against_true_conflicting():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    a = np.array([0, 0, 0, 1, 1, 1, 1, 0])  # class 0's majority is 0, class 1's is 1
    truth = true_conflicting(y, a, 2, 2)
    assert truth.tolist() == [False, False, False, True, False, False, False, True]
    q = pseudo_attribute_quality(np.array([0, 1, 0, 1, 0, 0, 0, 0]), truth)
    assert (q["precision"], q["recall"]) == (0.5, 0.5)
    assert pseudo_attribute_quality(np.zeros(8, int), truth)["precision"] is None


def test_pseudo_groups_follow_the_reference_models_confidence(tmp_path):
    erm_cfg = resolve_config("spurious-gaussian", "erm", data=SMALL, hparams={"epochs": 3, "lr": 0.01})
    run(erm_cfg, out=tmp_path / "erm")
    config = resolve_config("spurious-gaussian", "gerne-pseudo", data=SMALL, regime="val",
                            hparams={"erm_run": str(tmp_path / "erm"), "threshold": 0.7, **FAST})
    splits = load_dataset("spurious-gaussian", 0, **SMALL)
    trainer = Trainer(config, splits, torch.device("cpu"))
    method = trainer.new_method(GERNEPseudo, TrainData(trainer.train_set, trainer.device))
    method.setup(TrainerContext(trainer))
    reference = trainer.load_reference_model(tmp_path / "erm", "erm_run")
    probs = predict_logits(reference, splits.train.x, trainer.device).softmax(dim=1).numpy()
    confidence = probs[np.arange(len(probs)), splits.train.y]
    expected = (confidence <= 0.7).astype(int)
    assert 0 < expected.sum() < len(expected)
    assert method.attributes.tolist() == expected.tolist()
    # the less-biased draw gives the pseudo-conflicting half more mass than the biased draw does
    conflicting = torch.as_tensor(expected == 1)
    assert method.p_lb[conflicting].sum() > method.p_b[conflicting].sum() + 0.1
    # a reference run on another seed describes another training set: refused
    other = resolve_config("spurious-gaussian", "erm", seed=1, data=SMALL, hparams={"epochs": 1})
    run(other, out=tmp_path / "erm1")
    config1 = resolve_config("spurious-gaussian", "gerne-pseudo", data=SMALL, regime="val",
                             hparams={"erm_run": str(tmp_path / "erm1"), **FAST})
    with pytest.raises(GroupRobustError, match="seed 1"):
        run(config1)
    with pytest.raises(GroupRobustError, match="model.pt not found"):
        run(resolve_config("spurious-gaussian", "gerne-pseudo", data=SMALL, regime="val",
                           hparams={"erm_run": str(tmp_path / "nothing"), **FAST}))


def _shuffled_train_groups(splits, seed):
    perm = np.random.default_rng(seed).permutation(len(splits.train))
    a = splits.train.a[perm]
    train = replace(splits.train, a=a, g=splits.train.y * splits.train.n_attrs + a)
    return replace(splits, train=train)


@pytest.mark.parametrize("method,regime", [("gerne-pseudo", "val"), ("gerne", "full")])
def test_true_train_groups_are_never_read_in_pseudo_mode(method, regime):
    hparams = FAST if method == "gerne-pseudo" else {"epochs": 2, "lr": 0.01}
    config = resolve_config("spurious-gaussian", method, data=SMALL, regime=regime, hparams=hparams)
    splits = load_dataset("spurious-gaussian", 0, **SMALL)
    states = []
    for s in (splits, _shuffled_train_groups(splits, 1)):
        trainer = Trainer(config, s, torch.device("cpu"))
        trainer.fit()
        states.append(trainer.selected_state)
    same = all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # pseudo mode: bit-identical; known attributes (the control): the shuffle changes the model
    assert same == (method == "gerne-pseudo")


def test_history_reports_pseudo_attribute_quality(tmp_path):
    config = resolve_config("spurious-gaussian", "gerne-pseudo", data=SMALL, regime="val", hparams=FAST)
    result = run(config, out=tmp_path / "r")
    lines = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    quality = lines[0]["pseudo_attributes"]
    assert 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
    assert quality["n_true_conflicting"] == int(true_conflicting(
        *(lambda t: (t.y, t.a, 2, 2))(load_dataset("spurious-gaussian", 0, **SMALL).train)).sum())
    assert result["method_info"]["pseudo_attributes"] == quality
    assert lines[-1]["gerne"]["beta_max"] == result["method_info"]["beta_max"]
