import json

import pytest
import torch

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.runs import run
from grouprobust import training
from grouprobust.training import make_optimizer


def test_same_config_and_seed_give_identical_metrics(tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", seed=5, data=tiny_gaussian, hparams={"epochs": 3})
    r1, r2 = run(cfg), run(cfg)
    assert r1["metrics"] == r2["metrics"]
    other = run(resolve_config("spurious-gaussian", "erm", seed=6, data=tiny_gaussian, hparams={"epochs": 3}))
    assert other["metrics"] != r1["metrics"]


@pytest.mark.slow
def test_erm_on_colored_digits_learns_but_worst_group_lags():
    cfg = resolve_config("colored-digits", "erm", seed=0, data={"conflict": 0.01})
    result = run(cfg)
    test = result["metrics"]["test"]
    assert test["avg_acc"] > 0.35  # chance is 0.10
    assert test["worst_group_acc"] < test["avg_acc"] - 0.25


def test_erm_leans_on_the_spurious_feature():
    cfg = resolve_config("spurious-gaussian", "erm", seed=0)
    test = run(cfg)["metrics"]["test"]
    assert test["worst_group_acc"] < test["avg_acc"] - 0.15


def test_selected_epoch_maximises_validation_rule(tmp_path, tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", seed=0, data=tiny_gaussian, hparams={"epochs": 4})
    result = run(cfg, out=tmp_path / "r")
    history = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    best = max(h["metrics"]["val"]["worst_group_acc"] for h in history)
    chosen = history[result["selected"]["epoch"] - 1]
    assert chosen["metrics"]["val"]["worst_group_acc"] == best
    assert result["metrics"]["test"] == chosen["metrics"]["test"]


def test_diverging_run_is_marked_failed(tmp_path, tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian,
                         hparams={"epochs": 2, "model": "linear", "optimizer": "sgd", "lr": 1e38})
    with pytest.raises(DivergedError, match="lower the learning rate"):
        run(cfg, out=tmp_path / "bad")
    error = json.loads((tmp_path / "bad" / "error.json").read_text())
    assert error["status"] == "failed" and "epoch 1" in error["reason"]
    assert not (tmp_path / "bad" / "result.json").exists()


def test_interrupted_run_leaves_nothing(tmp_path, tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"epochs": 3})

    def interrupt(epoch, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "r", on_epoch=interrupt)
    # nothing but the checkpoint that resumes it (of epoch 1), beside the run: not even the claim's lock file
    assert [p.name for p in tmp_path.iterdir()] == [".r.ckpt"]
    assert [p.name for p in (tmp_path / ".r.ckpt").iterdir()] == [f"{cfg.run_id}.pt"]


def test_finished_run_is_reused_and_different_run_refused(tmp_path, tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"epochs": 2})
    first = run(cfg, out=tmp_path / "r")
    again = run(cfg, out=tmp_path / "r")
    assert again["reused"] and again["metrics"] == first["metrics"]
    other = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"epochs": 3})
    with pytest.raises(GroupRobustError, match="already holds a different run"):
        run(other, out=tmp_path / "r")


def test_model_file_holds_the_selected_weights(tmp_path, tiny_gaussian):
    from grouprobust.models import build_model
    from grouprobust.training import evaluate

    cfg = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"epochs": 3})
    result = run(cfg, out=tmp_path / "r")
    model = build_model(cfg.hparams["model"], (20,), 2, cfg.hparams["hidden"])
    model.load_state_dict(torch.load(tmp_path / "r" / "model.pt"))
    splits = load_dataset("spurious-gaussian", 0, **tiny_gaussian)
    assert evaluate(model, splits.test, torch.device("cpu"))["avg_acc"] == result["metrics"]["test"]["avg_acc"]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(hparams={"lr": "fast"}), "lr must be float"),
    (dict(hparams={"bogus": 1}), "unknown hyper-parameter 'bogus'"),
    (dict(hparams={"model": "resnet"}), "model=resnet is not one of: linear, mlp, cnn"),
    (dict(method="groupdro", hparams={"sampler": "foo"}), "sampler=foo is not one of"),
    (dict(regime="some"), "unknown label regime"),
    (dict(regime="none", select="val_worst_group_acc"), "needs validation group labels"),
    (dict(hparams={"epochs": 0}), "epochs >= 1 is required"),
])
def test_config_errors(kwargs, fragment, tiny_gaussian):
    args = dict(dataset="spurious-gaussian", method="erm", data=tiny_gaussian)
    args.update(kwargs)
    with pytest.raises(GroupRobustError, match=fragment):
        resolve_config(**args)


def test_regime_none_hides_validation_groups_from_selection(tiny_gaussian):
    cfg = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"epochs": 2}, regime="none")
    assert cfg.select == "val_worst_class_acc"
    result = run(cfg)
    assert result["metrics"]["val"]["worst_group_acc"] is None
    assert result["metrics"]["test"]["worst_group_acc"] is not None


def test_run_id_depends_on_everything_that_changes_numbers(tiny_gaussian):
    base = resolve_config("spurious-gaussian", "erm", data=tiny_gaussian)
    assert base.run_id == resolve_config("spurious-gaussian", "erm", data=tiny_gaussian).run_id
    assert base.run_id != resolve_config("spurious-gaussian", "erm", seed=1, data=tiny_gaussian).run_id
    assert base.run_id != resolve_config("spurious-gaussian", "erm", data=tiny_gaussian, hparams={"lr": 0.01}).run_id


def _trained_parameters(optimizer: str, implementation: dict | None) -> torch.Tensor:
    """Parameters after 5 steps of ``make_optimizer``'s optimizer (``implementation``: its own choice) or of
    the same optimizer switched to ``implementation`` (e.g. torch's per-parameter loop)."""
    hp = {"optimizer": optimizer, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = make_optimizer(model, hp)
    if implementation is not None:
        opt.param_groups[0].update(implementation)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(16, 5, generator=generator)).square().mean().backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_are_fused_on_a_cpu_and_match_the_per_parameter_loop(optimizer, monkeypatch):
    """On a CPU make_optimizer picks the fused kernels (one per update): they match torch's per-parameter loop
    (its CPU default) to float32 rounding; elsewhere the multi-tensor implementation matches it to the bit."""
    model = torch.nn.Linear(2, 2)
    assert make_optimizer(model, {"optimizer": optimizer, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
                          ).param_groups[0]["fused"]
    loop = _trained_parameters(optimizer, {"fused": False, "foreach": False})
    fused = _trained_parameters(optimizer, None)
    torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(training, "FUSED_DEVICES", ())  # a device without fused kernels
    assert torch.equal(_trained_parameters(optimizer, None), loop)
