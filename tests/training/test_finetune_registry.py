"""Every loop method fine-tunes a pretrained image backbone and a text backbone end to end (tiny transformers
ResNet and BERT built here), through the benchmarks' and the table's file readers; stage 1 is trained once."""

from __future__ import annotations

import json
import os

import pytest

from grouprobust.config import resolve_config
from grouprobust.methods.base import Method
from grouprobust.methods.registry import get_method, method_names
from grouprobust.runs import run

from finetune_fixtures import small_waterbirds, text_table, tiny_bert_folder, tiny_resnet_folder

pytest.importorskip("transformers")

LOOP = [m for m in method_names() if issubclass(get_method(m), Method)]
FAST = {"epochs": 1, "batch_size": 16, "jtt": {"stage1_epochs": 1}, "gerne-pseudo": {"erm_epochs": 1}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as patch:  # this module's caches (images, tokens, stage 1) in its own folder
        patch.setenv("GROUPROBUST_CACHE", str(root / "cache"))
        yield {"images": small_waterbirds(root / "wb"), "resnet": tiny_resnet_folder(root / "resnet"),
               "bert": tiny_bert_folder(root / "bert"), "texts": text_table(root / "texts.csv")}


def _hparams(method: str, backbone: str) -> dict:
    return {"epochs": 1, "batch_size": 16, "backbone": backbone, **FAST.get(method, {})}


def _check(result: dict, out) -> None:
    assert (out / "model.pt").is_file()
    test = result["metrics"]["test"]
    assert test["worst_group_acc"] is not None and 0 <= test["avg_acc"] <= 1
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert any("metrics" in h for h in history)


@pytest.mark.parametrize("method", LOOP)
def test_every_loop_method_fine_tunes_an_image_backbone(method, files, tmp_path):
    regime = get_method(method).needs if get_method(method).needs != "none" else "val"
    cfg = resolve_config("waterbirds", method, 0, {"image_size": 16}, _hparams(method, files["resnet"]),
                         regime=regime, root=files["images"])
    assert cfg.data["image_size"] == 16 and cfg.hparams["optimizer"] == "sgd"  # the conv recipe
    _check(run(cfg, tmp_path / "run"), tmp_path / "run")


@pytest.mark.parametrize("method", LOOP)
def test_every_loop_method_fine_tunes_a_text_backbone(method, files, tmp_path):
    regime = get_method(method).needs if get_method(method).needs != "none" else "val"
    data = {"path": str(files["texts"]), "label": "toxic", "attribute": "group", "split": "split", "text": "comment"}
    cfg = resolve_config("table", method, 0, data, _hparams(method, files["bert"]), regime=regime)
    assert cfg.hparams["optimizer"] == "adamw" and cfg.data["tokenizer"]  # the transformer recipe, its tokenizer
    _check(run(cfg, tmp_path / "run"), tmp_path / "run")


def test_two_stage_methods_share_one_fine_tuned_stage1(files, tmp_path):
    inode = {}
    for method, extra in (("dfr", {"Cs": [1.0], "n_subsamples": 1}), ("gsr", {"n_steps": 2})):
        cfg = resolve_config("waterbirds", method, 0, {"image_size": 16},
                             {"epochs": 1, "batch_size": 16, "backbone": files["resnet"], **extra}, regime="val",
                             root=files["images"])
        run(cfg, tmp_path / method)
        inode[method] = os.stat(tmp_path / method / "stage1" / "model.pt").st_ino
    assert inode["dfr"] == inode["gsr"]  # one stage-1 run, hard-linked into both


def test_jtt_stage1_is_trained_once_for_every_lambda_up(files, tmp_path):
    from grouprobust.data.disk_cache import cache_dir

    store = cache_dir("stage1")
    before = set(store.glob("*.pt")) if store.is_dir() else set()
    for lambda_up in (2, 5):
        cfg = resolve_config("waterbirds", "jtt", 1, {"image_size": 16},
                             {**_hparams("jtt", files["resnet"]), "lambda_up": lambda_up}, regime="val",
                             root=files["images"])
        run(cfg, tmp_path / f"jtt{lambda_up}")
    assert len(set(store.glob("*.pt")) - before) == 1


@pytest.mark.parametrize("finetune", ["head", "lora"])
def test_head_and_lora_fine_tuning_leave_the_backbones_own_weights_as_loaded(finetune, files, tmp_path):
    import torch

    from grouprobust.backbones import load_backbone

    spec = files["resnet"] if finetune == "head" else files["bert"]  # LoRA adapts linear layers: the BERT's
    if finetune == "head":
        cfg = resolve_config("waterbirds", "erm", 0, {"image_size": 16},
                             {**_hparams("erm", spec), "finetune": finetune}, root=files["images"])
    else:
        data = {"path": str(files["texts"]), "label": "toxic", "attribute": "group", "split": "split",
                "text": "comment"}
        cfg = resolve_config("table", "erm", 0, data, {**_hparams("erm", spec), "finetune": finetune, "lr": 1e-2})
    run(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    loaded = load_backbone(spec, image_size=16).module.state_dict()
    prefix = "features.backbone."
    own = {k[len(prefix):].replace(".base_layer", ""): v for k, v in state.items()
           if k.startswith(prefix) and "lora_" not in k}
    assert set(loaded) <= set(own), sorted(set(loaded) - set(own))[:3]
    assert all(torch.equal(own[k], loaded[k]) for k in loaded)  # the backbone's weights did not train
    trained = {k: v for k, v in state.items() if k.startswith("head.") or "lora_B" in k}
    assert trained and any(bool(v.abs().sum() > 0) for k, v in trained.items() if "lora_B" in k or finetune == "head")
