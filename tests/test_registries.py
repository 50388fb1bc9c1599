"""Tests driven by the registries (as DomainBed does): every registered method, loss, dataset and
parameter is exercised, so a new entry is tested by being registered."""

import importlib
import json
import math
import sys
import textwrap

import numpy as np
import pytest
import torch

import grouprobust.methods as methods_pkg
from grouprobust.config import param_space, resolve_config
from grouprobust.data.registry import list_datasets, load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.losses import LOSSES, make_loss
from grouprobust.methods import registry
from grouprobust.methods.base import REGIMES, TwoStageMethod
from grouprobust.methods.registry import get_method, list_methods, method_names
from grouprobust.params import Choice, resolve_params
from grouprobust.registry import Registry
from grouprobust.runs import run

TINY = {"n": 200, "n_val": 100, "n_test": 100}
TRAIN = {"epochs": 1, "batch_size": 32}
# Parameters that keep a method's extra work small (two-stage estimators, JTT's first stage).
FAST = {"gsr": {"n_steps": 2}, "gsr-hf": {"n_steps": 2}, "dfr": {"Cs": [1.0], "n_subsamples": 1},
        "jtt": {"stage1_epochs": 1}, "afr": {"gammas": [4.0], "regs": [0.1]}, "self": {"l2s": [0.01]}}
FAST.update({m: {"Cs": [1.0], "n_draws": 1} for m in ("crt", "reweight-crt", "vanilla-crt")})


def fast_hparams(method: str) -> dict:
    return {**TRAIN, **FAST.get(method, {})}


def _method_regimes():
    cases = []
    for name in method_names():
        needs = REGIMES.index(get_method(name).needs)
        cases += [pytest.param(name, regime, id=f"{name}-{regime}") for regime in REGIMES[needs:]]
    return cases


def _refused_regimes():
    cases = []
    for name in method_names():
        needs = REGIMES.index(get_method(name).needs)
        cases += [pytest.param(name, regime, id=f"{name}-{regime}") for regime in REGIMES[:needs]]
    return cases


def _read_history(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _selected_is_in_history(method_cls, selected, history):
    """The selected entry exists in ``history.jsonl``: an epoch of a loop run, a GSR step, a DFR ``C``."""
    if issubclass(method_cls, TwoStageMethod):  # what the estimator chose: GSR's step, DFR's C, AFR's gamma/reg ...
        keys = [k for k in selected if k not in ("rule", "oracle", "epoch")]
        return bool(keys) and any(all(h.get(k) == selected[k] for k in keys) for h in history)
    return any(h.get("epoch") == selected["epoch"] and "metrics" in h for h in history)


@pytest.mark.parametrize("method, regime", _method_regimes())
def test_every_method_runs_in_every_regime_it_supports(method, regime, tmp_path):
    cfg = resolve_config("spurious-gaussian", method, 0, TINY, fast_hparams(method), regime=regime)
    out = tmp_path / "run"
    result = run(cfg, out, save_model=False)
    stored = json.loads((out / "result.json").read_text())
    assert stored["method"] == method and stored["regime"] == regime == result["regime"]
    test_wga = stored["metrics"]["test"]["worst_group_acc"]
    assert test_wga is not None and 0 <= test_wga <= 1, test_wga
    val = stored["metrics"]["val"]
    if regime == "none":  # validation group labels are withheld: the figure is undefined, and says why
        assert val["worst_group_acc"] is None and "group labels" in val["undefined"]["worst_group_acc"]
    else:
        assert val["worst_group_acc"] is not None and 0 <= val["worst_group_acc"] <= 1, val["worst_group_acc"]
    history = _read_history(out / "history.jsonl")
    assert history, "history.jsonl is empty"
    assert _selected_is_in_history(get_method(method), stored["selected"], history), stored["selected"]
    if not issubclass(get_method(method), TwoStageMethod):
        assert stored["selected"]["rule"] == cfg.select


@pytest.mark.parametrize("method, regime", _refused_regimes())
def test_a_method_is_refused_in_a_regime_without_the_labels_it_needs(method, regime):
    with pytest.raises(GroupRobustError, match=f"needs group labels.*use regime {get_method(method).needs!r}") as err:
        resolve_config("spurious-gaussian", method, 0, TINY, regime=regime)
    assert "\n" not in str(err.value)


def test_every_registered_method_is_listed_with_a_known_regime():
    listed = {m["name"]: m for m in list_methods()}
    assert sorted(listed) == method_names()
    for name, entry in listed.items():
        assert entry["needs"] in REGIMES and entry["summary"], name
        assert entry["kind"] == ("two-stage" if issubclass(get_method(name), TwoStageMethod) else "loop")


# --- losses -------------------------------------------------------------------------------------

def _loss_cases():
    """Every loss at its defaults, and once per value of each of its choice parameters."""
    cases = []
    for name, spec in LOSSES.items():
        cases.append(pytest.param(name, {}, id=name))
        for key, param in spec.params.items():
            if isinstance(param.constraint, Choice):
                cases += [pytest.param(name, {key: v}, id=f"{name}-{key}={v}") for v in param.constraint.values
                          if v != param.default]
    return cases


@pytest.mark.parametrize("name, overrides", _loss_cases())
def test_every_loss_gives_finite_non_negative_values_and_gradients(name, overrides):
    hparams = {"loss": name, **resolve_params(LOSSES[name].params, overrides)}
    fn = make_loss(hparams, np.array([50, 30, 5]))
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(16, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 3, (16,), generator=gen)
    values = fn(logits, y)
    assert values.shape == (16,)
    assert torch.isfinite(values).all() and (values >= 0).all(), values
    values.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_an_erm_run_with_every_loss_finishes(name, tmp_path):
    cfg = resolve_config("spurious-gaussian", "erm", 0, TINY, {**TRAIN, "loss": name})
    out = tmp_path / "run"
    result = run(cfg, out, save_model=False)
    assert result["hparams"]["loss"] == name
    (entry,) = _read_history(out / "history.jsonl")
    assert math.isfinite(entry["train_loss"]) and entry["train_loss"] >= 0
    assert 0 <= json.loads((out / "result.json").read_text())["metrics"]["test"]["worst_group_acc"] <= 1


def test_an_unknown_loss_is_refused_listing_the_known_ones():
    with pytest.raises(GroupRobustError, match="unknown loss 'no-such-loss'.*poly-tailed"):
        resolve_config("spurious-gaussian", "erm", hparams={"loss": "no-such-loss"})


# --- datasets -----------------------------------------------------------------------------------

EMBEDDED = [e for e in list_datasets() if e.embedded]
NOT_EMBEDDED = [e for e in list_datasets() if not e.embedded]


@pytest.mark.parametrize("entry", EMBEDDED, ids=lambda e: e.name)
def test_every_embedded_dataset_builds_with_its_defaults(entry):
    splits = load_dataset(entry.name, seed=0)
    assert splits.name == entry.name
    for split in (splits.train, splits.val, splits.test):
        assert len(split) > 0, split.split
        assert split.y.min() >= 0 and split.y.max() < split.n_classes, split.split
        assert np.isfinite(split.x).all(), split.split
        if split.g is not None:
            assert split.g.min() >= 0 and split.g.max() < split.n_groups, split.split
    assert splits.train.x.shape[1:] == splits.val.x.shape[1:] == splits.test.x.shape[1:]
    assert len(np.unique(splits.train.y)) == splits.train.n_classes


@pytest.mark.parametrize("entry", NOT_EMBEDDED, ids=lambda e: e.name)
def test_datasets_read_from_disk_refuse_to_build_without_their_file(entry):
    with pytest.raises(GroupRobustError) as err:
        load_dataset(entry.name)
    message = str(err.value)
    assert "\n" not in message and entry.name in message
    option = next(iter(entry.option_params()))  # the file or directory option
    assert f"{option}=" in message, message


# --- parameters ---------------------------------------------------------------------------------

def _spaces():
    return [pytest.param(m, loss, id=f"{m}-{loss}") for m in method_names() for loss in sorted(LOSSES)]


@pytest.mark.parametrize("method, loss", _spaces())
def test_every_default_and_search_range_satisfies_its_constraint(method, loss):
    for name, param in param_space(get_method(method), loss).items():
        param.check(name, param.default)
        for value in param.search_values():
            param.check(name, value)
        if param.search is not None and param.search[0] != "choice":
            assert param.search[1] <= param.search[2], name


@pytest.mark.parametrize("entry", list_datasets(), ids=lambda e: e.name)
def test_every_dataset_option_default_satisfies_its_constraint(entry):
    for name, param in entry.option_params().items():
        param.check(name, param.default, "dataset option")


@pytest.mark.parametrize("method, name, value, allowed", [
    ("groupdro", "eta", -1, "[0, inf)"),
    ("cvar-dro", "alpha", 0, "(0, 1]"),
    ("cvar-dro", "alpha", 1.5, "(0, 1]"),
    ("erm", "lr", 0, "(0, inf)"),
    ("erm", "epochs", 0, "[1, inf)"),
])
def test_an_out_of_range_value_is_refused_naming_parameter_value_and_range(method, name, value, allowed):
    with pytest.raises(GroupRobustError) as err:
        resolve_config("spurious-gaussian", method, hparams={name: value})
    message = str(err.value)
    assert name in message and str(value) in message and allowed in message, message
    assert "\n" not in message


def test_an_out_of_range_dataset_option_is_refused():
    p = next(e for e in list_datasets() if e.name == "spurious-gaussian").option_params()["p"]
    assert p.constraint is not None
    with pytest.raises(GroupRobustError) as err:
        resolve_config("spurious-gaussian", "erm", data={"p": 2})
    message = str(err.value)
    assert "p" in message and "2" in message and str(p.constraint) in message, message


# --- a new method is one file -------------------------------------------------------------------

FOCAL = '''
"""Focal-loss ERM, written as a test that a method is one module."""

import torch.nn.functional as F

from grouprobust.methods.base import Method
from grouprobust.methods.registry import register_method
from grouprobust.params import NON_NEGATIVE, Param


@register_method
class FocalERM(Method):
    name = "focal-erm-test"
    needs = "none"
    summary = "ERM on the focal loss (1 - p_y)^gamma * CE"
    params = {"gamma": Param(2.0, ("uniform", 0.0, 5.0), "focusing exponent", NON_NEGATIVE)}

    def loss(self, model, batch):
        ce = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        return ((1 - (-ce).exp()) ** self.hparams["gamma"] * ce).mean()
'''


@pytest.fixture
def focal_method(tmp_path, monkeypatch):
    """A method module in a temporary directory on ``grouprobust.methods.__path__``; removed afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "focal_erm_test.py").write_text(textwrap.dedent(FOCAL))
    registry.method_names()  # load the real methods first
    monkeypatch.setattr(methods_pkg, "__path__", [*methods_pkg.__path__, str(folder)])
    monkeypatch.setattr(registry.METHODS, "_entries", dict(registry.METHODS._entries))
    monkeypatch.setattr(registry.METHODS, "_loaded", False)
    importlib.invalidate_caches()
    yield "focal-erm-test"
    sys.modules.pop("grouprobust.methods.focal_erm_test", None)
    if hasattr(methods_pkg, "focal_erm_test"):
        delattr(methods_pkg, "focal_erm_test")


def test_a_new_method_is_one_module(focal_method, tmp_path):
    assert focal_method in {m["name"] for m in list_methods()}
    assert get_method(focal_method).params["gamma"].default == 2.0
    cfg = resolve_config("spurious-gaussian", focal_method, 0, TINY, {**TRAIN, "gamma": "1.5"})
    assert cfg.hparams["gamma"] == 1.5
    out = tmp_path / "run"
    result = run(cfg, out, save_model=False)
    assert result["method"] == focal_method
    assert 0 <= json.loads((out / "result.json").read_text())["metrics"]["test"]["worst_group_acc"] <= 1
    with pytest.raises(GroupRobustError, match="gamma"):
        resolve_config("spurious-gaussian", focal_method, hparams={"gamma": -1})


def test_the_temporary_method_is_gone_afterwards():
    assert "focal-erm-test" not in method_names()
    assert "grouprobust.methods.focal_erm_test" not in sys.modules


def test_a_registry_keeps_one_entry_per_name_and_names_the_closest_on_a_typo():
    widgets = Registry("widget", subject="widget")
    first = widgets.register("sprocket")(object())
    widgets.add("sprocket", first)  # the same entry again (a module imported twice) is no conflict
    with pytest.raises(TypeError, match="two widget entries are called 'sprocket'"):
        widgets.add("sprocket", object())
    widgets.add("gear", object())
    assert list(widgets) == ["sprocket", "gear"] and widgets.get_entry("gear") is widgets["gear"]
    with pytest.raises(GroupRobustError, match=r"unknown widget 'sprockit' \(did you mean 'sprocket'\?\); "
                                               r"choose one of: gear, sprocket") as err:
        widgets.get_entry("sprockit")
    assert err.value.subject == "widget"

