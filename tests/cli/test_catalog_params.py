"""Parameters are discoverable: `methods NAME` / `losses NAME` list them, and an unknown `--set` name ends
with the valid ones."""

import pytest

from cli_runner import cli
from grouprobust.config import param_space
from grouprobust.methods import get_method


@pytest.mark.parametrize("method", ["jtt", "dfr", "mmd"])
def test_methods_name_lists_every_parameter_with_its_default_range_and_constraint(method, capsys):
    code, out, err = cli(["methods", method], capsys, squash=True)
    assert code == 0, err
    for name, param in param_space(get_method(method), "ce").items():
        assert name in out, name
    assert "group labels read:" in out
    if method == "jtt":
        assert "lambda_up" in out and "int(2, 100)" in out and "lambda_up >= 0" in out
        assert "validation group labels only" in out


def test_losses_name_lists_its_own_and_the_shared_parameters(capsys):
    code, out, err = cli(["losses", "focal"], capsys, squash=True)
    assert code == 0, err
    assert "focal_gamma" in out and "uniform(0.0, 3.0)" in out and "class_weights" in out


def test_unknown_method_name_is_one_line_listing_the_methods(capsys):
    code, out, err = cli(["methods", "no-such"], capsys, squash=True)
    assert code == 2 and err.endswith("vanilla-crt, vrex")


def test_unknown_set_name_ends_with_the_valid_names(tmp_path, capsys):
    code, out, err = cli(["train", "-d", "spurious-gaussian", "-m", "jtt", "--regime", "val", "--set", "lambda=3",
                          "-o", str(tmp_path / "r")], capsys, squash=True)
    assert code == 2
    assert "unknown hyper-parameter 'lambda'" in err and "(set it with" not in err
    assert err.endswith(", ".join(sorted(param_space(get_method("jtt"), "ce"))[-2:]))


def test_train_help_points_to_the_parameter_listing(capsys):
    code, out, _ = cli(["train", "--help"], capsys, squash=True)
    assert code == 0 and "grouprobust methods NAME" in out
