"""What a backbone is before anything is loaded: its input, its source and training family.

`InputSpec`, `BackboneInfo` and `Backbone` are plain records (no torch import here), and
`check_input_kind` is the one message for a backbone given inputs of the other kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grouprobust.errors import GroupRobustError

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# package.module:callable; a spec with a colon that does not match it is malformed
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
TEXT_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
                "minilm": "sentence-transformers/all-MiniLM-L6-v2"}
SOURCES = ("torchvision", "timm", "factory", "torchscript", "export", "hf", "sentence-transformers")
PT2_SUFFIX = ".pt2"


@dataclass(frozen=True)
class InputSpec:
    """What the backbone reads: ``kind`` "image" (normalised ``(B, C, image_size, image_size)`` floats, ``mean``
    and ``std`` per channel on the [0, 1] scale) or "text" (token ids from ``tokenizer``, at most ``max_length``)."""

    kind: str
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    tokenizer: str = ""
    max_length: int = 512


@dataclass(frozen=True)
class BackboneInfo:
    """A backbone known without its weights: ``source`` (one of `SOURCES`), ``family`` ("conv" or
    "transformer", which picks the training recipe) and its ``input``."""

    spec: str
    source: str
    family: str
    input: InputSpec


@dataclass
class Backbone:
    """A loaded backbone. ``module`` maps an image batch ``(B, C, H, W)`` (normalised floats) or a text batch
    ``(B, 2, L)`` int64 (input ids stacked on the attention mask) to features ``(B, feature_dim)``.
    ``report`` says how it was built: weights fitted (``stripped_prefix``, ``ignored_keys``), ``pooling``,
    ``cut`` (the classifier layer replaced by the identity)."""

    module: "nn.Module"
    feature_dim: int
    info: BackboneInfo
    report: dict[str, Any] = field(default_factory=dict)


def classify_spec(spec: str, kind: str | None = None) -> str:
    """The source a backbone ``spec`` names (one of `SOURCES`); a malformed factory spec is refused here.

    A plain name (no colon, no file) is a transformers hub name ("hf") when ``kind`` is "text", when it has
    an organisation (``org/name``) or a hyphen (torchvision names have none: ``resnet50``, ``vit_b_16``) or
    when the Hugging Face cache holds it; otherwise a torchvision model name.
    """
    if not spec or not spec.strip():
        raise GroupRobustError("the backbone spec is empty; name a model (e.g. resnet50, hf:DIR, timm:NAME, "
                               "package.module:callable or a model file)", subject="backbone")
    if spec.startswith("hf:"):
        return "hf"
    if Path(spec).expanduser().is_dir():  # a model folder named without hf: or st:
        return "sentence-transformers" if (Path(spec).expanduser() / "modules.json").is_file() else "hf"
    if spec.startswith("timm:"):
        return "timm"
    if spec.startswith("st:") or spec.lower() in TEXT_ALIASES or spec.startswith("sentence-transformers/"):
        return "sentence-transformers"
    if Path(spec).is_file():
        return "export" if spec.endswith(PT2_SUFFIX) else "torchscript"
    if spec.endswith(PT2_SUFFIX) or Path(spec).suffix in (".pt", ".ts", ".jit", ".pth"):
        raise GroupRobustError(f"backbone file {spec} not found; give the path of an existing TorchScript or "
                               "torch.export (.pt2) file", subject="backbone")
    if ":" in spec:
        if FACTORY.match(spec):
            return "factory"
        raise GroupRobustError(f"backbone {spec!r} is malformed; a factory is written package.module:callable "
                               "(both parts non-empty Python names), others as timm:NAME, hf:DIR or st:NAME",
                               subject="backbone")
    if kind == "text" or "/" in spec or "-" in spec or hub_cache_dir(spec).is_dir():
        return "hf"
    return "torchvision"


def hub_cache_dir(name: str) -> Path:
    """Where the Hugging Face cache keeps the hub model ``name`` (it may not exist)."""
    import os

    home = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    return Path(home) / ("models--" + name.replace("/", "--"))


def check_input_kind(info: BackboneInfo, kind: str, dataset: str = "this dataset") -> None:
    """Refuse, in one line, a backbone that reads ``info.input.kind`` inputs for a dataset of ``kind`` inputs."""
    if info.input.kind == kind:
        return
    names = {"image": "images", "text": "texts", "features": "feature vectors"}
    have, reads = names.get(kind, kind), names.get(info.input.kind, info.input.kind)
    other = {"image": "an image backbone (a torchvision name, timm:NAME, hf:DIR of a vision model, "
                      "package.module:callable)",
             "text": "a text backbone (all-MiniLM-L6-v2, st:NAME, a transformers name or hf:DIR)"}.get(
        kind, "no backbone (feature vectors train the head and small networks directly)")
    raise GroupRobustError(f"backbone {info.spec!r} reads {reads} but {dataset} has {have}; use {other}",
                           subject="backbone")


__all__ = ["Backbone", "BackboneInfo", "FACTORY", "IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "SOURCES",
           "TEXT_ALIASES", "check_input_kind", "classify_spec"]
