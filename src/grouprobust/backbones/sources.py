"""Image networks by source, before any cut: a torchvision name, ``timm:NAME``, a factory
``package.module:callable``, a TorchScript file or a ``torch.export`` program (``.pt2``).

`build_network` returns the network with its weights (a state-dict file fitted by
`grouprobust.backbones.weights`, the library's own cached weights, or the file's), the input it expects
and, for torchvision, its own preprocessing; the `features` command reads layers of it, `load_backbone`
turns it into a feature module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grouprobust.backbones.fetch import offline_message, require, unreachable
from grouprobust.backbones.files import exported_input_shape, exported_program, torchscript_module
from grouprobust.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from grouprobust.backbones.weights import fit_weights_file
from grouprobust.errors import GroupRobustError

DEFAULT_CROP_PCT = 0.875


@dataclass
class Network:
    """An image network as built: ``model`` (with its weights), the ``input`` it expects, ``crop_pct`` (the
    share of the resized image its centre crop keeps), ``preprocess`` (the library's own transform, if it has
    one), ``report`` (how the weights were fitted) and ``scripted`` (a TorchScript module: no hooks)."""

    model: Any
    input: InputSpec
    crop_pct: float = DEFAULT_CROP_PCT
    preprocess: Any = None
    report: dict[str, Any] = field(default_factory=dict)
    scripted: bool = False


def factory_module(spec: str) -> Any:
    """The ``nn.Module`` returned by calling ``package.module:callable`` with no arguments."""
    from torch import nn

    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise GroupRobustError(f"cannot import {module_name!r} for backbone {spec!r} ({err}); put the module on "
                               "PYTHONPATH or install its package", subject="backbone") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise GroupRobustError(f"{module_name!r} has no {attr!r}; backbone {spec!r} must name a callable as "
                                   "package.module:callable", subject="backbone")
        target = getattr(target, part)
    model = target() if callable(target) else target
    if not isinstance(model, nn.Module):
        raise GroupRobustError(f"backbone {spec!r} returned {type(model).__name__}, not a torch.nn.Module; the factory "
                               "must return the network", subject="backbone")
    return model


def _timm(name: str, weights: Path | None, download: bool, pretrained: bool) -> Network:
    """A timm model: architecture only with ``weights`` (fitted) or ``pretrained=False``, else timm's
    pretrained weights (fetched into the Hugging Face cache only with ``download``)."""
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise GroupRobustError("timm backbones need timm, which is not installed; pip install 'grouprobust[timm]'",
                               subject="backbone") from None
    if hasattr(timm, "is_model") and not timm.is_model(name):
        known = ", ".join(list(timm.list_models())[:12]) if hasattr(timm, "list_models") else ""
        raise GroupRobustError(f"unknown timm model {name!r}; use a name of timm.list_models() ({known}, ...)",
                               subject="backbone")
    if pretrained and weights is None and not download:
        raise GroupRobustError(f"no local weights for timm:{name}: give weights (a state-dict file), or allow "
                               "download to fetch timm's pretrained weights", subject="weights")
    model = timm.create_model(name, pretrained=pretrained and weights is None)
    report = fit_weights_file(model, weights if pretrained else None, f"timm:{name}")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    spec = InputSpec("image", size, tuple(cfg.get("mean") or IMAGENET_MEAN), tuple(cfg.get("std") or IMAGENET_STD))
    return Network(model, spec, float(cfg.get("crop_pct") or DEFAULT_CROP_PCT), report=report)


def _torchvision(name: str, weights: Path | None, download: bool, pretrained: bool) -> Network:
    """A torchvision classification model: architecture only with ``weights`` (fitted) or ``pretrained=False``,
    else its default weights from torch's hub cache (fetched only with ``download``)."""
    import torch

    tv = require("torchvision", "vision")
    try:
        builder_weights = tv.models.get_model_weights(name)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.models.list_models(tv.models))[:12])
        raise GroupRobustError(f"unknown image backbone {name!r}; use a torchvision model name ({known}, ...), "
                               "timm:NAME, hf:DIR, package.module:callable or a TorchScript/.pt2 file",
                               subject="backbone") from None
    default = builder_weights.DEFAULT
    if weights is not None or not pretrained:
        model = tv.models.get_model(name, weights=None)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
        if not cached.is_file() and not download:
            raise GroupRobustError(f"no local weights for {name}: give weights (a state-dict file), or allow "
                                   f"download to fetch {default.url} into {cached.parent}", subject="weights")
        host = default.url.split("/")[2]
        offline = None if cached.is_file() else unreachable(host)
        fix = f"put the file at {cached}, or give weights (a state-dict file)"
        if offline is not None:
            raise GroupRobustError(offline_message(name, host, offline, fix), subject="weights")
        try:
            model = tv.models.get_model(name, weights=default)
        except OSError as err:  # urllib's URLError and socket errors: no network here
            raise GroupRobustError(offline_message(name, default.url, err, fix), subject="weights") from None
    report = fit_weights_file(model, weights if pretrained else None, name)
    preprocess = default.transforms()
    crop = getattr(preprocess, "crop_size", None) or [224]
    spec = InputSpec("image", int(crop[0]), tuple(getattr(preprocess, "mean", IMAGENET_MEAN)),
                     tuple(getattr(preprocess, "std", IMAGENET_STD)))
    return Network(model, spec, preprocess=preprocess, report=report)


def _exported(path: Path, image_size: int | None) -> Network:
    program = exported_program(path)
    shape = exported_input_shape(program, path)
    size = shape[-1] if len(shape) == 4 and isinstance(shape[-1], int) else None
    if size is not None and image_size is not None and image_size != size:
        raise GroupRobustError(f"{path}: exported for {size} px images, not {image_size}; export it again at that "
                               "size or with dynamic height and width", subject="backbone")
    return Network(program.module(), InputSpec("image", int(size or image_size or 224)),
                   report={"exported_input": [d if isinstance(d, int) else str(d) for d in shape],
                           "mode": "fixed at export"})


def build_network(spec: str, source: str, weights: Path | None = None, download: bool = False,
                  pretrained: bool = True, image_size: int | None = None) -> Network:
    """The image network ``spec`` names (its ``source`` from `classify_spec`), see `Network`.

    ``pretrained=False`` builds the architecture only (torchvision, timm) or the factory's own initial
    weights, and reads no weights file; TorchScript and exported files are read as they are.
    """
    if source in ("torchscript", "export") and weights is not None:
        raise GroupRobustError(f"backbone {spec} is a {'TorchScript' if source == 'torchscript' else 'torch.export'} "
                               "file, which carries its own weights; leave weights unset", subject="weights")
    if source == "torchscript":
        return Network(torchscript_module(Path(spec)), InputSpec("image", image_size or 224), scripted=True)
    if source == "export":
        return _exported(Path(spec), image_size)
    if source == "timm":
        network = _timm(spec.removeprefix("timm:"), weights, download, pretrained)
    elif source == "factory":
        model = factory_module(spec)
        network = Network(model, InputSpec("image"), report=fit_weights_file(model, weights if pretrained else None,
                                                                              spec))
    else:
        network = _torchvision(spec, weights, download, pretrained)
    if image_size is not None:
        inp = network.input
        network.input = InputSpec("image", image_size, inp.mean, inp.std)
    return network


__all__ = ["Network", "build_network", "factory_module"]
