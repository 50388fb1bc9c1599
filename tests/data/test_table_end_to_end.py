"""A user's CSV all the way through: `table` -> ERM and GroupDRO -> `report`, through the CLI's main."""

import json

import pandas as pd
import pytest

import grouprobust
from table_fixtures import census_frame
from cli_runner import cli


def test_csv_to_erm_and_groupdro_to_report(tmp_path, capsys):
    csv = tmp_path / "census.csv"
    census_frame(400, seed=1).to_csv(csv, index=False)
    data = ["--data", f"path={csv}", "--data", "label=income", "--data", "attribute=sex"]
    for method in ("erm", "groupdro"):
        code, out, err = cli(["train", "--dataset", "table", *data, "--method", method, "--epochs", "2", "-q",
                              "--set", "batch_size=64", "--out", str(tmp_path / "runs" / method)], capsys)
        assert code == 0, err
        assert "income=>50K,sex=Female" in out
    result = json.loads((tmp_path / "runs" / "groupdro" / "result.json").read_text())
    assert {g["name"] for g in result["metrics"]["test"]["per_group"].values()} == {
        "income=<=50K,sex=Female", "income=<=50K,sex=Male", "income=>50K,sex=Female", "income=>50K,sex=Male"}

    code, out, err = cli(["report", str(tmp_path / "runs"), "--no-plots"], capsys)
    assert code == 0, err
    assert "groupdro" in out and "val_worst_group_acc" in out  # piped output: nothing cut to fit 80 columns
    assert "…" not in out
    per_group = pd.read_csv(tmp_path / "runs" / "report" / "per_group.csv")
    assert set(per_group["group"]) >= {"income=>50K,sex=Female", "income=<=50K,sex=Male"}
    runs = grouprobust.load_runs(tmp_path / "runs")
    assert sorted(runs["method"]) == ["erm", "groupdro"] and set(runs["data.label"]) == {"income"}
    assert runs.loc[runs.method == "groupdro", "test_worst_group_acc"].item() == pytest.approx(
        result["metrics"]["test"]["worst_group_acc"])
