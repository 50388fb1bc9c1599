"""Property-based tests (Hypothesis): any input to the option parser, the sweep-file parser and
`GroupDataset` either gives a valid, typed result or raises `GroupRobustError`; never another exception."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grouprobust.cli.options import parse_assignments
from grouprobust.config import RunConfig, param_space, resolve_config
from grouprobust.data.dataset import GroupDataset
from grouprobust.data.registry import get_dataset_entry
from grouprobust.errors import GroupRobustError
from grouprobust.methods.registry import get_method
from grouprobust.params import TRAIN_PARAMS, Choice, Interval
from grouprobust.sweep.spec import parse_sweep
from grouprobust.sweep.trials import expand

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

METHODS = ["erm", "groupdro", "jtt", "gerne", "dfr", "nosuch"]
DATASETS = ["spurious-gaussian", "toxic-templates", "spurious-gausian"]
HPARAM_KEYS = sorted(set(TRAIN_PARAMS) | {"eta", "c", "beta", "C", "lambda_up", "alpha", "holdout_frac", "bogus"})
DATA_KEYS = ["n", "n_val", "n_test", "p", "dim", "bogus"]

# Text a user might type as a value: numbers of every kind, special floats, names, lists, JSON, junk.
VALUE_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-0", "0", "1", "-1", "0.5", "1e-3",
                     "true", "false", "mlp", "cnn", "sgd", "ce", "squared", "[1, 2]", "[]", "{}", "", " ", "1,2",
                     "uniform", "9999999999999999999999"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
ASSIGNMENT = st.one_of(
    st.tuples(st.sampled_from(HPARAM_KEYS + DATA_KEYS), VALUE_TEXT).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=12),  # anything, with or without '='
)


def _assert_valid(config: RunConfig) -> None:
    """A resolved config: every value finite, typed and inside its declared constraint."""
    space = param_space(get_method(config.method), config.hparams["loss"])
    for name, value in config.hparams.items():
        param = space[name]
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
        if param.kind in (int, float, bool, str):
            assert isinstance(value, param.kind), (name, value)
        if param.constraint is not None and not isinstance(value, (list, tuple)):
            assert param.constraint.contains(value), (name, value)
    options = get_dataset_entry(config.dataset).option_params()
    for name, value in config.data.items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
        constraint = options[name].constraint
        if isinstance(constraint, (Interval, Choice)):
            assert constraint.contains(value), (name, value)
    assert isinstance(config.seed, int) and config.seed >= 0


@FAST
@given(dataset=st.sampled_from(DATASETS), method=st.sampled_from(METHODS),
       seed=st.one_of(st.integers(-3, 2**33), st.sampled_from(["0", "-1", "x", 1.5, True])),
       sets=st.lists(ASSIGNMENT, max_size=4), data=st.lists(ASSIGNMENT, max_size=3),
       regime=st.sampled_from(["full", "val", "none", "bogus"]),
       select=st.one_of(st.none(), st.sampled_from(["val_avg_acc", "val_worst_group_acc", "oracle_test_avg_acc",
                                                    "val_wilds_worst_group_acc", "nosuch"])))
def test_option_parser_and_resolution_give_a_valid_config_or_the_projects_error(dataset, method, seed, sets, data,
                                                                                regime, select):
    try:
        config = resolve_config(dataset, method, seed, parse_assignments(data, "--data"),
                                parse_assignments(sets, "--set"), regime, select)
    except GroupRobustError as err:
        assert str(err) and "\n" not in str(err)
        return
    _assert_valid(config)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["erm", "groupdro", "lr", "spurious-gaussian", "full", "x", "val_avg_acc"]))
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["lr", "epochs", "n", "p", "count", "params", "grid", "set", "random", "x"]),
                    inner, max_size=3)), max_leaves=8)
METHOD_BODY = st.one_of(JSONISH, st.fixed_dictionaries({}, optional={
    "set": st.dictionaries(st.sampled_from(["lr", "epochs", "hidden", "weight_decay", "bogus"]), SCALARS, max_size=2),
    "grid": st.dictionaries(st.sampled_from(["lr", "momentum", "epochs"]), st.one_of(SCALARS, st.lists(SCALARS, max_size=2)),
                            max_size=2),
    "random": st.one_of(SCALARS, st.fixed_dictionaries({}, optional={
        "count": st.one_of(st.integers(-1, 2), SCALARS), "params": st.one_of(st.lists(st.sampled_from(["lr", "bogus"]),
                                                                                        max_size=2), SCALARS)})),
}))
SWEEP = st.fixed_dictionaries({}, optional={
    "name": SCALARS, "seed": st.one_of(st.integers(-2, 3), SCALARS),
    "seeds": st.one_of(st.integers(-1, 2), st.lists(st.one_of(st.integers(-1, 3), SCALARS), max_size=3), SCALARS),
    "regime": st.one_of(st.sampled_from(["full", "none"]), SCALARS), "select": SCALARS,
    "set": st.one_of(st.dictionaries(st.sampled_from(["epochs", "lr", "bogus"]), SCALARS, max_size=2), SCALARS),
    "datasets": st.one_of(
        st.dictionaries(st.sampled_from(["spurious-gaussian", "toxic-templates", "features", "nosuch"]),
                        st.one_of(st.none(), st.dictionaries(st.sampled_from(DATA_KEYS + ["path"]), SCALARS, max_size=2)),
                        max_size=2),
        st.lists(st.sampled_from(["spurious-gaussian", "nosuch"]), max_size=2), JSONISH),
    "methods": st.one_of(st.dictionaries(st.sampled_from(["erm", "groupdro", "dfr", "nosuch"]), METHOD_BODY, max_size=2),
                         st.lists(st.sampled_from(["erm", "jtt"]), max_size=2), JSONISH),
    "bogus": SCALARS,
})


@FAST
@given(raw=SWEEP)
def test_sweep_parser_and_expansion_give_valid_trials_or_the_projects_error(raw):
    path = Path("sweep.yaml")
    try:
        trials = expand(parse_sweep(raw, path))
    except GroupRobustError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
        return
    assert trials
    for trial in trials:
        _assert_valid(trial.config)


ARRAY_VALUES = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True, width=32),
                         st.booleans())


@st.composite
def dataset_inputs(draw):
    n = draw(st.integers(0, 6))
    dims = draw(st.sampled_from([(n,), (n, 2), (n, 1, 2), (n, 0)]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, object]))
    values = st.integers(-3, 5) if dtype is np.int64 else ARRAY_VALUES  # the array itself must be constructible
    size = int(np.prod(dims))
    x = np.asarray(draw(st.lists(values, min_size=size, max_size=size)), dtype=dtype).reshape(dims)
    length = st.integers(max(n - 1, 0), n + 1)
    labels = st.builds(lambda k, vals: np.asarray(vals[:k]), length, st.lists(ARRAY_VALUES, min_size=n + 1, max_size=n + 1))
    kwargs = {"x": x, "y": draw(labels), "a": draw(st.one_of(st.none(), labels)),
              "n_classes": draw(st.integers(0, 4)), "n_attrs": draw(st.integers(0, 3))}
    optional = {"g": st.one_of(st.none(), labels),
                "group_names": st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=6)),
                "eval_groups": st.one_of(st.none(), st.builds(lambda m: np.ones((n, m), bool), st.integers(0, 2)),
                                         st.builds(lambda: np.ones((n + 1, 1), bool)))}
    kwargs.update({k: draw(v) for k, v in optional.items()})
    return kwargs


@FAST
@given(kwargs=dataset_inputs())
def test_group_dataset_accepts_valid_arrays_or_raises_the_projects_error(kwargs):
    try:
        ds = GroupDataset(**kwargs)
    except GroupRobustError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert np.all(np.isfinite(ds.x)) and len(ds.y) == len(ds.x) > 0
    assert 0 <= ds.y.min() and ds.y.max() < ds.n_classes
    if ds.g is not None:
        assert len(ds.g) == len(ds.x) and 0 <= ds.g.min() and ds.g.max() < ds.n_groups


def test_the_strategies_reach_valid_inputs_too():
    """The properties above would hold vacuously if every draw were refused: valid examples do resolve."""
    config = resolve_config("spurious-gaussian", "erm", 0, parse_assignments(["n=200"], "--data"),
                            parse_assignments(["lr=0.01", "hidden=8"], "--set"))
    _assert_valid(config)
    assert config.hparams["lr"] == 0.01 and config.data["n"] == 200
    with pytest.raises(GroupRobustError, match="finite"):
        resolve_config("spurious-gaussian", "erm", 0, hparams={"lr": "nan"})
    with pytest.raises(GroupRobustError, match="finite"):
        resolve_config("spurious-gaussian", "erm", 0, data={"p": float("inf")})
    with pytest.raises(GroupRobustError, match="seed"):
        resolve_config("spurious-gaussian", "erm", -1)
    trials = expand(parse_sweep({"datasets": ["spurious-gaussian"], "methods": {"erm": {"grid": {"lr": [0.1, 0.01]}}},
                                 "seeds": 2}, Path("s.yaml")))
    assert len(trials) == 4
    ds = GroupDataset(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), 2, 2)
    assert list(ds.g) == [0, 2, 1, 3]
