"""`report` with every listed selection rule, and on damaged run directories; Ray's authentication error."""

import json

import pytest

from grouprobust.errors import GroupRobustError
from grouprobust.selection import SELECTION_RULES
from grouprobust.sweep.collect import collect_runs, metric_column
from grouprobust.sweep.report import select_and_aggregate, write_report


def _metrics(level: float) -> dict:
    """A metrics dict holding every figure some rule reads, all equal to ``level`` (class gap: 1 - level)."""
    m = {name: level for name in ("worst_group_acc", "group_balanced_acc", "avg_acc", "worst_class_acc", "balanced_acc",
                                  "macro_precision", "worst_class_precision", "macro_f1", "worst_class_f1",
                                  "worst_group_precision", "worst_group_f1", "auroc", "worst_attr_auroc")}
    m["class_acc_diff"] = 1.0 - level
    m["eval_groups"] = {"wilds_worst_group_acc": level}
    m["per_group"] = {"0": {"name": "g0", "acc": level, "n": 5}}
    return m


def _run(root, run_id, lr, seed, val, test):
    path = root / "runs" / run_id
    path.mkdir(parents=True)
    config = {"dataset": "toxic-templates", "method": "erm", "seed": seed, "data": {}, "hparams": {"lr": lr},
              "regime": "full", "select": "val_worst_group_acc"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "result.json").write_text(json.dumps({"metrics": {"val": _metrics(val), "test": _metrics(test)},
                                                  "selected": {"epoch": 1}}))
    return path


@pytest.fixture
def sweep(tmp_path):
    # lr=0.1 is better on validation (0.8 vs 0.6); lr=0.01 is better on test (0.9 vs 0.5)
    for seed in (0, 1):
        _run(tmp_path, f"a{seed}", 0.1, seed, 0.8, 0.5)
        _run(tmp_path, f"b{seed}", 0.01, seed, 0.6, 0.9)
    return tmp_path


@pytest.mark.parametrize("rule", list(SELECTION_RULES))
def test_every_listed_rule_selects_in_report(sweep, rule):
    report = select_and_aggregate(collect_runs(sweep), rule)
    row = report.summary.iloc[0]
    sel = SELECTION_RULES[rule]
    # validation rules pick lr=0.1 (every val figure is better there; the class gap is smaller), oracle ones lr=0.01
    expected = "lr=0.01" if sel.split == "test" else "lr=0.1"
    assert row["rule"] == rule and row["hparams"] == expected
    assert metric_column(sel) in report.runs


def test_a_rule_the_runs_lack_is_refused_in_one_line(sweep):
    result = sweep / "runs" / "a0" / "result.json"
    for path in (sweep / "runs").iterdir():
        data = json.loads((path / "result.json").read_text())
        del data["metrics"]["val"]["macro_f1"]
        (path / "result.json").write_text(json.dumps(data))
    assert result.is_file()
    with pytest.raises(GroupRobustError, match="val_macro_f1.*choose one of: val_worst_group_acc") as info:
        select_and_aggregate(collect_runs(sweep), "val_macro_f1")
    assert "\n" not in str(info.value) and "val_macro_f1," not in str(info.value)


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / "result.json").write_bytes(b"\x89PNG\x00\xff\xfe garbage"), "not text"),
    (lambda p: (p / "result.json").write_text("[1, 2]"), "not an object"),
    (lambda p: (p / "result.json").write_text('{"metrics": [1]}'), "metrics is not an object"),
    (lambda p: (p / "result.json").write_text("{broken"), "not valid JSON"),
    (lambda p: (p / "result.json").write_text("{}"), "lacks the key 'metrics'"),
    (lambda p: (p / "result.json").write_text('{"metrics": {"val": {"avg_acc": 0.5}}}'), "lacks the test split"),
    (lambda p: (p / "result.json").write_text('{"metrics": {"val": {}, "test": {"avg_acc": 0.5}}}'),
     "metrics.val holds none of"),
    (lambda p: (p / "config.json").write_text('{"method": "erm"}'), "lacks the key 'dataset'"),
    (lambda p: (p / "config.json").write_text('"text"'), "not an object"),
])
def test_damaged_runs_are_listed_unreadable_and_the_rest_is_reported(sweep, damage, reason):
    damage(sweep / "runs" / "b1")
    report, folder = write_report(sweep, plots=False)
    assert list(report.unreadable["run_id"]) == ["b1"]
    assert reason in report.unreadable["reason"].iloc[0]
    assert report.summary.iloc[0]["n_seeds"] == 2  # lr=0.1 still has both seeds
    text = (folder / "report.md").read_text()
    assert "## Unreadable runs" in text and "1 unreadable" in text


def test_a_result_without_metrics_is_no_seed(sweep):
    from grouprobust import load_runs

    (sweep / "runs" / "a1" / "result.json").write_text("{}")  # valid JSON, but no figures: damaged
    runs = load_runs(sweep).set_index("run_id")
    assert runs.loc["a1", "status"] == "unreadable" and "lacks the key 'metrics'" in runs.loc["a1", "reason"]
    report, folder = write_report(sweep, plots=False)
    row = report.summary.iloc[0]
    assert row["hparams"] == "lr=0.1" and row["n_seeds"] == 1 and row["test_worst_group_acc_mean"] == 0.5
    assert list(report.unreadable["run_id"]) == ["a1"] and "1 unreadable" in (folder / "report.md").read_text()


def test_every_run_damaged_is_refused_and_listed_by_collect_runs(sweep):
    for path in (sweep / "runs").iterdir():
        (path / "config.json").write_text("[]")
    assert (collect_runs(sweep)["status"] == "unreadable").sum() == 4
    with pytest.raises(GroupRobustError, match="every run under .* is unreadable .*holds a JSON list"):
        write_report(sweep, plots=False)
    assert not (sweep / "report").exists()


def test_ray_token_authentication_error_names_the_cause_and_the_fix(monkeypatch):
    ray = pytest.importorskip("ray")
    from grouprobust.sweep import executors

    def refuse(*args, **kwargs):
        raise ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token was found")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(executors, "_check_reachable", lambda address: None)
    with pytest.raises(GroupRobustError) as info:
        executors.RayExecutor(2, address="10.0.0.1:6379")
    message = str(info.value)
    assert "requires token authentication" in message and "RAY_AUTH_MODE=token" in message
    assert "AuthenticationError" in message and "\n" not in message and info.value.subject == "address"
