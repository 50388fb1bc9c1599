"""The GRW paper's six-image experiment: squared loss forgets the weights, the polynomial tail does not."""

import numpy as np
import pytest

from grouprobust.analysis import ImplicitBiasSetting, run_implicit_bias, six_digits
from grouprobust.errors import GroupRobustError


def _final(loss, l2=0.0, steps=1000):
    df = run_implicit_bias(ImplicitBiasSetting(loss=loss, l2=l2, steps=steps, lr=0.05), log_at=np.array([steps]))
    return df.set_index("method")


def test_six_digits_are_five_zeros_and_a_one():
    x, y = six_digits(0)
    assert x.shape == (6, 64) and list(y) == [0, 0, 0, 0, 0, 1]
    assert 0 <= x.min() and x.max() <= 1
    assert np.linalg.matrix_rank(x) == 6  # linearly independent, as the paper's theorem needs


def test_squared_loss_reweighting_converges_to_erm_weights():
    final = _final("squared")
    assert final.loc["iw", "erm_train_loss"] < 1e-6
    assert final.loc["iw", "rel_dist"] < 1e-2
    assert final.loc["groupdro", "rel_dist"] < 1e-2


def test_poly_tailed_loss_keeps_reweighted_weights_apart_and_logistic_stays_closer():
    poly = _final("poly-tailed")
    assert poly.loc["iw", "dir_dist"] > 0.1
    assert poly.loc["groupdro", "dir_dist"] > 0.1
    logistic = _final("ce")
    assert logistic.loc["iw", "dir_dist"] < poly.loc["iw", "dir_dist"]


def test_large_l2_separates_reweighting_from_erm_even_with_squared_loss():
    assert _final("squared", l2=1.0, steps=500).loc["iw", "rel_dist"] > 0.1


def test_bad_settings_raise_one_line_errors():
    with pytest.raises(GroupRobustError, match="unknown loss"):
        run_implicit_bias(ImplicitBiasSetting(loss="hinge"))
    with pytest.raises(GroupRobustError, match="lr > 0"):
        run_implicit_bias(ImplicitBiasSetting(lr=0.0))
    with pytest.raises(GroupRobustError, match="diverged"):
        run_implicit_bias(ImplicitBiasSetting(loss="squared", lr=5.0, steps=200))
