"""`Grouper`: the one (class, attribute) -> group rule, its names and counts, and the places that use it."""

import numpy as np
import pytest

from grouprobust.data.dataset import GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper
from grouprobust.methods.gerne import count_table


def test_group_ids_round_trip_through_class_and_attribute():
    grouper = Grouper(3, 4)
    y, a = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    g = grouper.group_ids(y.ravel(), a.ravel())
    assert g.tolist() == list(range(12))  # every (class, attribute) pair gets its own id, in y-major order
    assert grouper.n_groups == 12
    assert grouper.class_of(g).tolist() == y.ravel().tolist()
    assert grouper.attr_of(g).tolist() == a.ravel().tolist()
    assert grouper.group_ids([2], [1]).tolist() == [9]  # 2 * 4 + 1


def test_default_names_and_given_names():
    assert Grouper(2, 3).names == ["y=0,a=0", "y=0,a=1", "y=0,a=2", "y=1,a=0", "y=1,a=1", "y=1,a=2"]
    named = Grouper(2, 2, ["landbird", "waterbird"], ["land", "water"])
    assert named.names == ["landbird,land", "landbird,water", "waterbird,land", "waterbird,water"]
    assert Grouper(2, 2, attr_names=["red", "blue"]).names[1] == "y=0,blue"
    with pytest.raises(GroupRobustError, match="class names"):
        Grouper(2, 2, ["only one"])
    with pytest.raises(GroupRobustError, match="n_attrs"):
        Grouper(2, 0)


def test_count_table_against_a_hand_count():
    y = np.array([0, 0, 1, 1, 1, 2, 0])
    a = np.array([1, 1, 0, 1, 1, 0, 0])
    # class 0: a=0 once (last), a=1 twice; class 1: a=0 once, a=1 twice; class 2: a=0 once
    expected = [[1, 2], [1, 2], [1, 0]]
    assert Grouper(3, 2).count_table(y, a).tolist() == expected
    assert count_table(y, a, 3, 2).tolist() == expected  # GERNE's table is the grouper's


def test_from_groups_rounds_up_to_a_full_crossing():
    assert Grouper.from_groups(4, 2).n_attrs == 2
    assert Grouper.from_groups(5, 2).n_attrs == 3
    assert Grouper.from_groups(3, 3).n_attrs == 1


def test_is_cross_true_for_default_groups_false_for_a_dataset_with_its_own():
    x = np.zeros((4, 1))
    y, a = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    default = GroupDataset(x, y, a, 2, 2)
    assert default.g.tolist() == [0, 1, 2, 3]
    assert default.group_names == ["y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"]
    assert default.grouper.is_cross(default.g, default.y, default.a)
    own = GroupDataset(x, y, a, 2, 2, g=np.array([3, 2, 1, 0]))
    assert not own.grouper.is_cross(own.g, own.y, own.a)
    assert not default.grouper.is_cross(None, y, a)
    assert not default.grouper.is_cross(default.g, y, None)
