"""PyTorch image backbones as feature readers: the layer read and the image preprocessing.

The networks and their weights come from `grouprobust.backbones` (`grouprobust.backbones.sources`).

- Layer (`LayerReader`): by default the penultimate layer, i.e. the input of the model's last
  ``nn.Linear`` (its classifier); or any module by its name in ``model.named_modules()``, read
  with a forward hook. The forward pass stops at the layer read. A TorchScript module is read at
  its output (hooks cannot be added to a compiled module).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from grouprobust.backbones.spec import IMAGENET_MEAN, IMAGENET_STD
from grouprobust.backbones.weights import last_linear
from grouprobust.errors import GroupRobustError


class _Captured(Exception):
    """Raised by a hook to stop the forward pass once the layer read has its value."""


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


__all__ = ["LayerReader", "image_transform", "ResizeCropNormalize"]
