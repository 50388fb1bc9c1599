import numpy as np
import pytest

from grouprobust.data import GroupDataset, list_datasets, load_dataset
from grouprobust.errors import GroupRobustError


def make(**kw):
    base = dict(x=np.zeros((4, 2)), y=[0, 1, 0, 1], a=[0, 0, 1, 1], n_classes=2, n_attrs=2)
    base.update(kw)
    return GroupDataset(**base)


def test_groups_derived_from_label_and_attribute():
    ds = make()
    assert ds.g.tolist() == [0, 2, 1, 3]
    assert ds.group_counts().tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("kw, fragment", [
    (dict(y=[0, 1, 0]), "has 3"),
    (dict(y=[0, 1, 2, 1]), "y values must lie in 0..1"),
    (dict(a=[0, 0, 5, 1]), "attribute values must lie in 0..1"),
    (dict(x=np.array([[0, 0], [np.nan, 1], [0, 0], [0, 0]])), "NaN or inf"),
    (dict(y=[0.0, 1.0, np.nan, 1.0]), "NaN"),
    (dict(y=[0.5, 1, 0, 1]), "whole numbers"),
    (dict(x=np.zeros((0, 2)), y=[], a=[]), "empty"),
    (dict(group_names=["a", "b"]), "group names"),
    (dict(y=["cat", "dog", "cat", "dog"]), "integers"),
])
def test_validation_errors_are_one_line(kw, fragment):
    with pytest.raises(GroupRobustError) as err:
        make(**kw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_groups_are_reported_not_dropped():
    ds = make(a=[0, 0, 0, 0])
    assert ds.empty_groups() == ["y=0,a=1", "y=1,a=1"]
    assert ds.group_counts().tolist() == [2, 0, 2, 0]


def test_without_groups_hides_every_group_label():
    ds = make(eval_groups=np.ones((4, 2), dtype=bool))
    hidden = ds.without_groups()
    assert hidden.a is None and hidden.g is None and hidden.eval_groups is None
    assert ds.g is not None  # the original keeps them


def test_registry_lists_embedded_datasets():
    names = {e.name for e in list_datasets()}
    assert {"spurious-gaussian", "colored-digits"} <= names


def test_unknown_dataset_and_option_errors():
    with pytest.raises(GroupRobustError, match="did you mean 'spurious-gaussian'"):
        load_dataset("spurious-gausian")
    with pytest.raises(GroupRobustError, match="unknown option"):
        load_dataset("spurious-gaussian", bogus=1)
    with pytest.raises(GroupRobustError, match="must be float"):
        load_dataset("spurious-gaussian", p="high")


def test_spurious_gaussian_correlation_and_balance(tiny_gaussian):
    s = load_dataset("spurious-gaussian", seed=3, p=0.9, **tiny_gaussian)
    agree = (s.train.y == s.train.a).mean()
    assert 0.85 < agree < 0.95
    assert abs((s.test.y == s.test.a).mean() - 0.5) < 0.08
    core, spur = s.train.meta["core_direction"], s.train.meta["spurious_direction"]
    assert np.isclose(np.linalg.norm(core), 1) and np.isclose(core @ spur, 0)
    # the exposed directions really carry the label and the attribute
    ys = 2 * s.test.y - 1
    assert np.mean(np.sign(s.test.x @ core) == ys) > 0.7
    assert np.mean(np.sign(s.test.x @ spur) == 2 * s.test.a - 1) > 0.9


def test_datasets_are_deterministic_per_seed(tiny_gaussian):
    a = load_dataset("spurious-gaussian", seed=1, **tiny_gaussian)
    b = load_dataset("spurious-gaussian", seed=1, **tiny_gaussian)
    c = load_dataset("spurious-gaussian", seed=2, **tiny_gaussian)
    assert np.array_equal(a.train.x, b.train.x) and not np.array_equal(a.train.x, c.train.x)
    d1 = load_dataset("colored-digits", seed=0, copies=2)
    d2 = load_dataset("colored-digits", seed=0, copies=2)
    assert np.array_equal(d1.train.x, d2.train.x) and np.array_equal(d1.train.a, d2.train.a)


def test_colored_digits_bias_and_balanced_evaluation():
    s = load_dataset("colored-digits", seed=0, conflict=0.05, copies=4)
    assert s.train.n_groups == 100
    conflicting = (s.train.a != s.train.y).mean()
    assert 0.03 < conflicting < 0.07
    for split in (s.val, s.test):
        counts = split.group_counts().reshape(10, 10)
        # every digit appears in every color: each class's row is constant
        assert (counts == counts[:, :1]).all() and counts.min() > 0
    # the color really is the pixel color: channel ratios match the palette
    img, color = s.test.x[0], s.test.a[0]
    palette = s.test.meta["palette"][color]
    total = img.reshape(3, -1).sum(axis=1)
    assert np.allclose(total / total.max(), palette / palette.max(), atol=1e-5)


def test_colored_digits_binary_variant():
    s = load_dataset("colored-digits", seed=0, variant="binary", conflict=0.1, copies=2)
    assert s.train.n_classes == 2 and s.train.n_groups == 4
    assert 0.07 < (s.train.a != s.train.y).mean() < 0.13
    assert len(set(s.test.group_counts().tolist())) <= 2  # balanced up to rounding
