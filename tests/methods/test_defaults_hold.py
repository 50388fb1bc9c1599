"""Defaults that hold up on a census-like table: each test trains a method with the default it ships and
checks it learns, and that the default it replaced did not (so the test would fail on the old default)."""

import json

import pytest

from grouprobust import resolve_config, run
from table_fixtures import census_frame

TABLE = {"label": "income", "attribute": "sex"}


@pytest.fixture(scope="module")
def census(tmp_path_factory) -> dict:
    """Dataset options of a 1,500-row census-like table (income x sex), and its majority-class rate."""
    path = tmp_path_factory.mktemp("census") / "census.csv"
    frame = census_frame(1500, seed=1)
    frame.to_csv(path, index=False)
    return {"data": {"path": str(path), **TABLE}, "majority": float(frame["income"].value_counts(normalize=True).max())}


def best_val_avg_acc(census: dict, method: str, out, **hparams) -> float:
    """The best validation average accuracy over the epochs of one run (fraction)."""
    run(resolve_config("table", method, 0, census["data"], {"epochs": 8, **hparams}), out=out)
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return max(line["metrics"]["val"]["avg_acc"] for line in lines if "metrics" in line)


@pytest.mark.parametrize("method", ["mmd"])
def test_feature_matching_defaults_learn_where_matching_across_groups_does_not(census, tmp_path, method):
    # Groups of different classes given the same features leave the head nothing to separate: near chance.
    floor = census["majority"] + 0.03
    assert best_val_avg_acc(census, method, tmp_path / "default") > floor
    assert best_val_avg_acc(census, method, tmp_path / "group", env="group", mmd_gamma=1.0) < floor  # old default


def test_jtt_auto_lambda_up_gives_errors_and_the_rest_about_equal_draws():
    from grouprobust.methods.jtt import auto_lambda_up

    def share(lam, n_errors, n_train):
        return lam * n_errors / (lam * n_errors + n_train - n_errors)

    for n_errors, n_train in [(5, 1000), (150, 1000), (350, 1000), (400, 1000)]:
        lam = auto_lambda_up(n_errors, n_train)
        # No other whole number of copies brings the error set's share of the draws closer to one half.
        assert all(abs(share(lam, n_errors, n_train) - 0.5) <= abs(share(other, n_errors, n_train) - 0.5)
                   for other in range(1, 400))
    assert auto_lambda_up(0, 1000) == 1 and auto_lambda_up(600, 1000) == 1


def test_jtt_default_keeps_a_large_error_set_from_dominating_the_draws(census, tmp_path):
    # On this table ERM's errors are mostly rows whose label the features do not determine (about a fifth of
    # them): 20 copies each (the old default) made them most of every stage-2 epoch.
    shares = {}
    for name, hp in (("default", {}), ("old", {"lambda_up": 20})):
        result = run(resolve_config("table", "jtt", 0, census["data"], {"epochs": 2, **hp}, regime="val"),
                     out=tmp_path / name)
        info = result["method_info"]
        assert info["error_set_fraction"] > 0.1
        shares[name] = info["error_set_draw_share"]
    assert 0.4 < shares["default"] <= 0.6 < shares["old"]


def test_groupdro_says_when_its_weight_sits_on_groups_it_cannot_fit(census, tmp_path):
    from grouprobust.group_inference import infer_groups
    from grouprobust.trained import load_trained_run

    run(resolve_config("table", "erm", 0, census["data"], {"epochs": 2}), out=tmp_path / "ref")
    groups = infer_groups("spare", load_trained_run(tmp_path / "ref")).save(tmp_path / "g.npz")
    # Clusters of the reference's outputs within each class: the confidently wrong cluster of one class shares its
    # region with the other class, and the weight goes to such a pair, which no classifier fits at once.
    inferred = run(resolve_config("table", "groupdro", 0, census["data"], {"epochs": 8, "train_groups": str(groups)},
                                  "val"), out=tmp_path / "inferred")
    assert any("ended at chance" in w for w in inferred["warnings"])
    true = run(resolve_config("table", "groupdro", 0, census["data"], {"epochs": 8}), out=tmp_path / "true")
    assert not any("ended at chance" in w for w in true["warnings"])
    assert len(true["method_info"]["final_group_losses"]) == 4
