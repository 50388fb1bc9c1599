"""A backbone spec -> `BackboneInfo` (config files only) or a trainable `Backbone` (a feature module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grouprobust.backbones import hf
from grouprobust.backbones.modules import feature_module, module_family, run_probe
from grouprobust.backbones.sources import build_network
from grouprobust.backbones.spec import Backbone, BackboneInfo, classify_spec
from grouprobust.errors import GroupRobustError

TRANSFORMERS_SOURCES = ("hf", "sentence-transformers")


def _weights_path(weights: str | Path | None) -> Path | None:
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.exists():
        raise GroupRobustError(f"{weights} not found; weights must be an existing file or model directory",
                               subject="weights")
    return path


def describe_source(spec: str, source: str, weights: str | Path | None = None,
                    image_size: int | None = None) -> BackboneInfo:
    """`describe_backbone` for a spec whose ``source`` is already known (`classify_spec`)."""
    path = _weights_path(weights)
    if source in TRANSFORMERS_SOURCES:
        return hf.describe(spec, source, hf.resolve_folder(spec, source, path, download=False), image_size)
    network = build_network(spec, source, path, pretrained=False, image_size=image_size)
    return BackboneInfo(spec, source, module_family(network.model), network.input)


def describe_backbone(spec: str, weights: str | Path | None = None) -> BackboneInfo:
    """What backbone ``spec`` is (source, training family, the input it reads), without reading its weights:
    transformers folders from their config files, other networks built with their initial weights."""
    return describe_source(spec, classify_spec(spec), weights)


def load_source(spec: str, source: str, weights: str | Path | None = None, *, download: bool = False,
                pretrained: bool = True, image_size: int | None = None) -> Backbone:
    """`load_backbone` for a spec whose ``source`` is already known (`classify_spec`)."""
    path = _weights_path(weights)
    if source in TRANSFORMERS_SOURCES:
        folder = hf.resolve_folder(spec, source, path, download)
        info = hf.describe(spec, source, folder, image_size)
        module, report = hf.build(info, folder, pretrained)
        dim = int(run_probe(module, hf.probe_batch(info), spec).shape[1])
        return Backbone(module, dim, info, report)
    network = build_network(spec, source, path, download, pretrained, image_size)
    info = BackboneInfo(spec, source, module_family(network.model), network.input)
    module, dim, cut = feature_module(network.model, spec, info.input.image_size, frozen_mode=source == "export",
                                      cut=not network.scripted and source != "export")
    return Backbone(module, dim, info, {**network.report, **cut})


def load_backbone(spec: str, weights: str | Path | None = None, *, download: bool = False, pretrained: bool = True,
                  image_size: int | None = None) -> Backbone:
    """The backbone ``spec`` as a trainable feature module (see `Backbone`), on the CPU.

    ``weights``: a state-dict file for torchvision, timm and factory networks, or a model folder for a
    transformers hub name. ``download`` lets torchvision, timm and the Hugging Face hub fetch missing weights.
    ``pretrained=False`` builds the architecture with its initial weights and reads only config files (to
    rebuild a run whose saved state holds every weight). ``image_size`` overrides the backbone's input size.
    """
    return load_source(spec, classify_spec(spec), weights, download=download, pretrained=pretrained,
                       image_size=image_size)


def load_tokenizer(spec: str, weights: str | Path | None = None, *, download: bool = False) -> Any:
    """The transformers tokenizer of text backbone ``spec`` (saved beside its model)."""
    source = classify_spec(spec, kind="text")
    if source not in TRANSFORMERS_SOURCES:
        raise GroupRobustError(f"backbone {spec!r} reads images and has no tokenizer; use a text backbone "
                               "(all-MiniLM-L6-v2, st:NAME, a transformers name or hf:DIR)", subject="backbone")
    return hf.tokenizer(hf.resolve_folder(spec, source, _weights_path(weights), download))


__all__ = ["describe_backbone", "describe_source", "load_backbone", "load_source", "load_tokenizer"]
