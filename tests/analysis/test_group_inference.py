"""Group inference (EIIL, clustering, SPARE, SSA, error/confidence splits), training on inferred groups,
and the label-free last-layer estimators AFR and SELF."""

import json

import numpy as np
import pytest
import torch

from grouprobust import load_trained_run, resolve_config, run
from grouprobust.cli import main
from grouprobust.errors import GroupRobustError
from grouprobust.group_inference import (INFERENCE_METHODS, eiil_assignment, infer_groups, inference_quality,
                                         load_inferred_groups)
from grouprobust.lastlayer import AFR, SELF
from grouprobust.lastlayer.label_free import class_balanced
from grouprobust.training import Trainer

DATA = {"n": 1000, "n_val": 400, "n_test": 400}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("inference") / "erm"
    run(resolve_config("spurious-gaussian", "erm", 0, DATA, {"epochs": 5}, "none"), out)
    return load_trained_run(out)


def minority(ds):
    return ds.a != ds.y  # spurious-gaussian: the attribute disagrees with the label


def test_inference_quality_on_a_hand_example():
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    inferred = np.array([5, 5, 5, 5, 7, 7, 7, 7])  # inferred 5 -> true 0 (3 of 4), 7 -> true 2 (3 of 4)
    q = inference_quality(inferred, true, 3)
    assert q["per_group"]["0"]["recall"] == 1.0 and q["per_group"]["0"]["precision"] == 0.75
    assert q["per_group"]["1"]["recall"] == 0.0 and q["per_group"]["1"]["precision"] is None
    assert q["worst_group_recall"] == 0.0
    assert inference_quality(true, true, 3)["adjusted_rand_index"] == pytest.approx(1.0)


def test_eiil_puts_positive_and_negative_scale_gradients_in_different_environments():
    g = torch.tensor([2.0, 1.5, 1.8] + [-0.1] * 30, dtype=torch.float64)
    q = eiil_assignment(g, steps=1500, lr=0.05, seed=0)
    env = q > 0.5
    assert len(set(env[:3].tolist())) == 1 and env[3:].tolist().count(env[0]) == 0


def test_eiil_and_clustering_recover_the_minority_groups_better_than_chance(reference):
    train = reference.splits.train
    rng = np.random.default_rng(12345)  # not seed 0: that is the stream that drew the dataset's labels
    chance = inference_quality(train.y * 2 + rng.integers(0, 2, len(train)), train.g, train.n_groups)
    assert chance["adjusted_rand_index"] < 0.6 and chance["worst_group_recall"] < 0.6
    eiil = infer_groups("eiil", reference)
    assert eiil.info["quality"]["worst_group_recall"] >= 0.5
    assert eiil.info["quality"]["adjusted_rand_index"] > 0.8
    # the smaller EIIL environment is mostly the true minority (base rate about 5%)
    small = eiil.attribute == 1
    assert minority(train)[small].mean() > 0.5
    cluster = infer_groups("cluster", reference, {"k": 2})
    assert cluster.info["quality"]["adjusted_rand_index"] > 0.8 > chance["adjusted_rand_index"]
    in_small_clusters = cluster.attribute == 1
    assert minority(train)[in_small_clusters].mean() > 4 * minority(train).mean()


def test_ssa_agrees_with_the_truth_on_the_held_out_part_of_validation(reference):
    ssa = infer_groups("ssa", reference)
    assert ssa.info["heldout_val_accuracy"] > 0.9
    assert ssa.info["quality"]["worst_group_recall"] > 0.8
    assert INFERENCE_METHODS["ssa"].reads_val_groups and not INFERENCE_METHODS["eiil"].reads_val_groups


def test_every_method_returns_a_valid_assignment(reference):
    n = len(reference.splits.train)
    for name in INFERENCE_METHODS:
        groups = infer_groups(name, reference)
        assert groups.attribute.shape == (n,) and 0 <= groups.attribute.min() <= groups.attribute.max() < groups.n_attrs
        assert np.all((groups.confidence >= 0) & (groups.confidence <= 1))
    with pytest.raises(GroupRobustError, match="unknown group-inference method 'nope'"):
        infer_groups("nope", reference)
    with pytest.raises(GroupRobustError, match="k must lie in"):
        infer_groups("cluster", reference, {"k": 1})


def test_groupdro_trains_on_inferred_groups_without_reading_true_ones(reference, tmp_path):
    path = infer_groups("errors", reference).save(tmp_path / "groups.npz")
    saved = load_inferred_groups(path)
    assert json.loads(path.with_suffix(".json").read_text())["method"] == "errors"
    config = resolve_config("spurious-gaussian", "groupdro", 0, DATA, {"epochs": 2, "train_groups": str(path)}, "val")
    splits = reference.splits
    trainer = Trainer(config, splits, torch.device("cpu"))
    assert np.array_equal(trainer.train_set.a, saved.attribute)  # the method reads the inferred groups
    assert not np.array_equal(trainer.train_set.g, splits.train.g)
    assert trainer.group_inference["quality"]["worst_group_recall"] > 0.5  # reported, never trained on
    result = run(config, tmp_path / "run")
    assert result["method_info"]["group_inference"]["method"] == "errors"
    first = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert first["group_inference"]["quality"]["adjusted_rand_index"] > 0.5
    with pytest.raises(GroupRobustError, match="needs group labels"):  # inferred groups still need val labels
        resolve_config("spurious-gaussian", "groupdro", 0, DATA, {"train_groups": str(path)}, "none")
    other = resolve_config("spurious-gaussian", "groupdro", 1, DATA, {"epochs": 1, "train_groups": str(path)}, "val")
    with pytest.raises(GroupRobustError, match="label another training split"):
        run(other)


def test_infer_groups_command_writes_a_file_train_reads(reference, tmp_path, capsys):
    out = tmp_path / "g.npz"
    try:
        main(["infer-groups", "--from", str(reference.path), "--method", "spare", "--out", str(out)])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    assert out.is_file() and "adjusted Rand index" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["infer-groups", "--from", str(reference.path), "--method", "spare", "--out", str(out)])
    assert exit_.value.code == 2 and "exists" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["json sibling", "json folder", "under a file", "not npz"])
def test_infer_groups_refuses_an_output_it_would_damage_before_inferring(reference, tmp_path, capsys, case,
                                                                         monkeypatch):
    import grouprobust.group_inference as gi

    out, expected = tmp_path / "g.npz", "exists"
    if case == "json sibling":
        (tmp_path / "g.json").write_text('{"my": "notes"}')
    elif case == "json folder":
        (tmp_path / "g.json").mkdir()
    elif case == "under a file":
        (tmp_path / "afile").write_text("x")
        out, expected = tmp_path / "afile" / "g.npz", "afile is a file; give a folder path"
    else:
        out, expected = tmp_path / "g.csv", "must end in .npz"
    monkeypatch.setattr(gi, "infer_groups", lambda *a, **k: pytest.fail("inferred before checking --out"))
    with pytest.raises(SystemExit) as exit_:
        main(["infer-groups", "--from", str(reference.path), "--method", "errors", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "g.npz").exists()
    if case == "json sibling":
        assert (tmp_path / "g.json").read_text() == '{"my": "notes"}'


def test_groups_file_errors_say_which_half_is_missing_and_how_to_write_it(reference, tmp_path):
    path = infer_groups("errors", reference).save(tmp_path / "groups.npz")
    with pytest.raises(GroupRobustError, match="exists"):  # save never replaces the pair
        infer_groups("errors", reference).save(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(GroupRobustError, match=r"groups.json, which says what made the groups, is missing .*infer-groups"):
        load_inferred_groups(path)
    with pytest.raises(GroupRobustError, match=r"nope.npz not found; write them with `grouprobust infer-groups"):
        load_inferred_groups(tmp_path / "nope.npz")
    (tmp_path / "run.txt").write_text("x")
    with pytest.raises(GroupRobustError, match=r"run.txt is a file, not a run directory"):
        load_trained_run(tmp_path / "run.txt")


def _heldout(reference):
    feats, _ = reference.features()
    head = reference.model.head
    return feats, head.weight.detach().double().numpy(), head.bias.detach().double().numpy()


@pytest.mark.slow
def test_afr_weights_are_higher_on_the_base_models_errors(reference):
    feats, W0, b0 = _heldout(reference)
    train = feats.train
    est = AFR(gammas=(4.0,), regs=(0.1,)).fit(train.x, train.y, init_coef=W0, init_intercept=b0)
    wrong = np.argmax(train.x @ W0.T + b0, axis=1) != train.y
    assert wrong.any() and est.weights_[wrong].mean() > 5 * est.weights_[~wrong].mean()
    assert np.isclose(est.weights_.sum(), 1.0)
    per_class = np.bincount(train.y, weights=est.weights_)
    assert np.allclose(per_class, per_class[0])  # class-balanced
    # gamma = 0 and no pull: plain class-balanced logistic regression started at the base head
    flat = AFR(gammas=(0.0,), regs=(0.0,)).fit(train.x, train.y, init_coef=W0, init_intercept=b0)
    assert np.allclose(flat.weights_, class_balanced(np.ones(len(train)), train.y, 2))
    # a strong pull keeps the head at the base head
    pulled = AFR(gammas=(4.0,), regs=(1e4,)).fit(train.x, train.y, init_coef=W0, init_intercept=b0)
    assert np.abs(pulled.coef_ - W0).max() < 1e-2
    l1 = AFR(gammas=(4.0,), regs=(1e3,), penalty="l1").fit(train.x, train.y, init_coef=W0, init_intercept=b0)
    assert np.abs(l1.coef_ - W0).max() < 1e-6  # l1 pins it exactly


def test_self_retrains_class_balanced_on_a_set_enriched_for_minority_groups(reference):
    feats, W0, b0 = _heldout(reference)
    train = feats.train
    est = SELF(min_size=60).fit(train.x, train.y, init_coef=W0, init_intercept=b0)
    chosen = est.selected_
    assert len(chosen) >= 60
    assert minority(train)[chosen].mean() > 3 * minority(train).mean()
    w = class_balanced(np.ones(len(chosen)), train.y[chosen], 2)
    assert np.allclose(np.bincount(train.y[chosen], weights=w), 0.5)
    with pytest.raises(GroupRobustError, match="base head"):
        SELF().fit(train.x, train.y)


def test_afr_and_self_share_the_two_stage_protocol_with_gsr_and_dfr(tmp_path):
    data = {"n": 600, "n_val": 200, "n_test": 200}
    dfr = run(resolve_config("spurious-gaussian", "dfr", 0, data, {"epochs": 2}), tmp_path / "dfr")
    for method in ("afr", "self"):
        result = run(resolve_config("spurious-gaussian", method, 0, data,
                                    {"epochs": 2, "stage1": str(tmp_path / "dfr" / "stage1")}), tmp_path / method)
        assert result["features"]["cache_key"] == dfr["features"]["cache_key"]  # identical stage-1 features
        assert result["val_halves"] == dfr["val_halves"] and result["n_heldout"] == dfr["n_heldout"]
        assert 0 <= result["metrics"]["test"]["worst_group_acc"] <= 1
