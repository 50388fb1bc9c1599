"""PyTorch image backbones as feature readers: where the module comes from, its weights, the layer read.

- Modules: a torchvision model name (in `grouprobust.data.encoders`), ``timm:NAME`` (extra
  ``[timm]``), a user factory ``package.module:callable`` returning an ``nn.Module``, or a
  TorchScript file.
- Weights (`fit_state_dict`): a state dict, possibly wrapped (``{"state_dict": ...}``), whose keys
  may carry DataParallel's ``module.`` prefix (stripped) and keys the model does not have or a
  classifier head of another shape (skipped). Both are reported: the report goes into the feature
  directory's ``meta.json``. Any other mismatch is refused.
- Layer (`LayerReader`): by default the penultimate layer, i.e. the input of the model's last
  ``nn.Linear`` (its classifier); or any module by its name in ``model.named_modules()``, read
  with a forward hook. The forward pass stops at the layer read. A TorchScript module is read at
  its output (hooks cannot be added to a compiled module).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
PREFIX = "module."


class _Captured(Exception):
    """Raised by a hook to stop the forward pass once the layer read has its value."""


def last_linear(model: Any) -> str | None:
    """Name of the model's last ``nn.Linear`` (taken to be its classifier head), or None."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


class LayerReader:
    """Calls a module and returns the flattened ``(batch, dim)`` value of one of its layers.

    ``layer`` None reads the input of the last ``nn.Linear`` (the penultimate layer's output); a
    module without one is read at its output. ``scripted`` modules are read at their output.
    """

    def __init__(self, model: Any, layer: str | None = None, scripted: bool = False):
        self.model = model
        self.value: Any = None
        if scripted:
            if layer is not None:
                raise GroupRobustError("layer cannot be read from a TorchScript module (it takes no hooks); export "
                                       "the module up to that layer, or leave layer unset to read its output",
                                       subject="layer")
            self.description = "output"
            return
        if layer is None:
            head = last_linear(model)
            if head is None:
                self.description = "output"
                return
            model.get_submodule(head).register_forward_pre_hook(self._capture_input)
            self.description = f"input of {head}"
            return
        modules = dict(model.named_modules())
        if layer not in modules or layer == "":
            names = [n for n in modules if n][-12:]
            raise GroupRobustError(f"the backbone has no layer {layer!r}; name a module of model.named_modules(), "
                                   f"e.g. {', '.join(names)}", subject="layer")
        modules[layer].register_forward_hook(self._capture_output)
        self.description = layer

    def _capture_input(self, module: Any, inputs: tuple) -> None:
        self.value = inputs[0]
        raise _Captured

    def _capture_output(self, module: Any, inputs: tuple, output: Any) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output
        raise _Captured

    def __call__(self, batch: Any) -> Any:
        """The layer's value for ``batch``, flattened to ``(batch, dim)``."""
        self.value = None
        try:
            out = self.model(batch)
        except _Captured:
            out = self.value
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            raise GroupRobustError("the backbone returns a dict; name the layer to read", subject="layer")
        return out.flatten(1)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors saved at ``path``: a state dict, or one wrapped under ``state_dict`` / ``model``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure here means the file is not a readable state dict
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GroupRobustError(f"{path}: cannot be read as a PyTorch state dict ({first[:200]})",
                               subject="weights") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise GroupRobustError(f"{path}: holds no state dict (a mapping of parameter names to tensors); save "
                               "model.state_dict()", subject="weights")
    return state


def fit_state_dict(model: Any, state: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """Load ``state`` into ``model``; returns the report ``{"stripped_prefix", "ignored_keys"}``.

    A ``module.`` prefix on every key is stripped; keys the model lacks, and head keys (of its
    last ``nn.Linear``) of another shape, are skipped and listed in ``ignored_keys``. A missing
    key outside the head, or any other shape mismatch, raises a `GroupRobustError`.
    """
    own = model.state_dict()
    stripped = None
    if state and all(k.startswith(PREFIX) for k in state) and not any(k.startswith(PREFIX) for k in own):
        state = {k[len(PREFIX):]: v for k, v in state.items()}
        stripped = PREFIX
    head = last_linear(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    extra = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    bad = [k for k in mismatched if k not in head_keys]
    if bad:
        k = bad[0]
        raise GroupRobustError(f"{source}: does not fit {name} ({k} has shape {tuple(state[k].shape)}, the model "
                               f"expects {tuple(own[k].shape)}); pass weights saved from {name}", subject="weights")
    missing = [k for k in own if k not in state and k not in head_keys and not k.endswith("num_batches_tracked")]
    if missing:
        raise GroupRobustError(f"{source}: does not fit {name} (lacks {len(missing)} of its keys, e.g. {missing[0]}); "
                               f"pass weights saved from {name}", subject="weights")
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    return {"stripped_prefix": stripped, "ignored_keys": sorted(extra + mismatched)}


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


def timm_module(name: str, weights: Path | None, download: bool) -> Any:
    """A timm model ``name``: architecture only when ``weights`` are given, timm's pretrained ones otherwise
    (fetched into the Hugging Face cache only with ``download``)."""
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise GroupRobustError("timm backbones need timm, which is not installed; pip install 'grouprobust[timm]'",
                               subject="backbone") from None
    if hasattr(timm, "is_model") and not timm.is_model(name):
        known = ", ".join(list(timm.list_models())[:12]) if hasattr(timm, "list_models") else ""
        raise GroupRobustError(f"unknown timm model {name!r}; use a name of timm.list_models() ({known}, ...)",
                               subject="backbone")
    if weights is None and not download:
        raise GroupRobustError(f"no local weights for timm:{name}: give weights (a state-dict file), or allow "
                               "download to fetch timm's pretrained weights", subject="weights")
    return timm.create_model(name, pretrained=weights is None)


def torchscript_module(path: Path, device: Any) -> Any:
    """The TorchScript module saved at ``path`` (``torch.jit.save``), on ``device``."""
    import torch

    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as err:  # not a TorchScript archive
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GroupRobustError(f"{path}: cannot be read as a TorchScript file ({first[:200]}); for a state dict give "
                               "a model name as backbone and the file as weights", subject="backbone") from None


class ResizeCropNormalize:
    """PIL image -> ``(3, size, size)`` float tensor: shorter side resized to ``size / crop_pct``, centre
    crop, scaled to [0, 1] and normalised by ``mean`` / ``std``. A class rather than a closure so that it
    pickles into DataLoader workers started by spawn or forkserver."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float):
        import torch

        self.size, self.crop_pct = size, crop_pct
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: Any) -> Any:
        import torch
        from PIL import Image

        size = self.size
        scale = size / self.crop_pct / min(image.size)
        w, h = max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))
        image = image.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std


def image_transform(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    crop_pct: float = 0.875) -> ResizeCropNormalize:
    """The `ResizeCropNormalize` preprocessing at ``size`` px (ImageNet's mean and std by default)."""
    return ResizeCropNormalize(size, mean, std, crop_pct)


def timm_transform(model: Any) -> Any:
    """The preprocessing a timm model declares in ``pretrained_cfg`` (input size, mean, std, crop), in
    `image_transform`'s terms; ImageNet's defaults where it declares none."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    return image_transform(size, cfg.get("mean") or IMAGENET_MEAN, cfg.get("std") or IMAGENET_STD,
                           float(cfg.get("crop_pct") or 0.875))


__all__ = ["FACTORY", "LayerReader", "factory_module", "fit_state_dict", "image_transform", "last_linear",
           "read_state_dict", "ResizeCropNormalize", "timm_module", "timm_transform", "torchscript_module"]
