"""Images from the decode cache to a backbone's input, on the device: crop, resize, flip, normalise.

`ImageInput` takes a batch of the cache's stored squares (uint8 or float in [0, 1], side ``S``) and
returns the backbone's input (float, side ``image_size``, normalised by ``mean``/``std``).

- Evaluation (``eval()`` mode, or ``augment=False``): the centre square of side ``round(S * 0.875)``,
  resized to ``image_size`` when the sides differ (bilinear, antialiased). At
  ``S = round(image_size / 0.875)`` (the side the cache stores) the crop is ``image_size`` itself and
  this is group_DRO's ``Resize(256) + CenterCrop(224)``.
- Training with ``augment``: for each sample a random resized crop, drawn as torchvision's
  ``RandomResizedCrop`` draws it (area fraction in ``scale``, log-uniform aspect ratio in ``ratio``,
  ten tries and then a centre crop of the clamped ratio), resized to ``image_size`` by one
  ``affine_grid``/``grid_sample`` over the whole batch, and a horizontal flip with probability 0.5
  (``flip``). Everything runs on the input's device with no host synchronisation.
  (``benchmarks/image_augment.py`` compares kornia's RandomResizedCrop + RandomHorizontalFlip on the
  CPU: 2-20x slower on (64, 3, 37, 37) batches, 0.7-1.3x on (32, 3, 256, 256) ones; no dependency
  for that.)

Randomness comes from a ``torch.Generator`` the module owns, created on the input's device at the
first training batch: `seed` seeds it, `get_rng_state`/`set_rng_state` save and restore it for a
resumed run. The module has no parameters (nothing to train, nothing in an optimizer).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grouprobust.errors import GroupRobustError

EVAL_CROP = 0.875  # the centre crop's share of the stored side (224 of 256)
CROP_TRIES = 10  # torchvision's RandomResizedCrop draws this many candidates before falling back


def eval_crop_side(stored: int) -> int:
    """Side in pixels of the centre crop the evaluation path takes from a stored square of side ``stored``."""
    return max(1, round(stored * EVAL_CROP))


def _check_range(name: str, pair: Sequence[float], low: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise GroupRobustError(f"{name} must be a pair of numbers (low, high), got {pair!r}", subject=name) from None
    if not (low < a <= b) or not math.isfinite(b):
        raise GroupRobustError(f"{name} must be a pair 0 < low <= high, got {pair!r}", subject=name)
    return a, b


class ImageInput(nn.Module):
    """Stored uint8/float squares ``(B, C, S, S)`` to normalised float ``(B, C, image_size, image_size)``.

    ``mean``/``std``: one value per channel (in [0, 1] units). ``augment``: random resized crop +
    flip in training mode; ``scale`` is the crop's area as a fraction of the stored square, ``ratio``
    its width / height; ``flip`` turns the horizontal flip on or off.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], augment: bool,
                 scale: Sequence[float] = (0.7, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True):
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise GroupRobustError(f"image_size must be a positive integer, got {image_size!r}", subject="data:image_size")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or not bool((std_t > 0).all()):
            raise GroupRobustError(f"mean and std must have one value per channel and std must be positive, got "
                                   f"mean={list(mean)} std={list(std)}")
        self.image_size = image_size
        self.augment = bool(augment)
        self.scale = _check_range("scale", scale, 0.0)
        if self.scale[1] > 1.0:
            raise GroupRobustError(f"scale is a fraction of the image's area, at most 1, got {scale!r}", subject="scale")
        self.ratio = _check_range("ratio", ratio, 0.0)
        self.flip = bool(flip)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        self._seed: int = 0
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None
        self._pending_device: str | None = None

    # -- randomness ------------------------------------------------------------------------------------

    def seed(self, seed: int) -> None:
        """Seed the augmentation's generator (now, and on whichever device it is created later)."""
        self._seed = int(seed)
        self._pending_state = None
        if self._generator is not None:
            self._generator.manual_seed(self._seed)

    def get_rng_state(self) -> dict[str, Any]:
        """The generator's state as ``{"seed", "device", "state"}`` (``state``: a CPU uint8 tensor, or None
        before the first training batch), for `set_rng_state` in a resumed run."""
        if self._generator is None:
            state = self._pending_state
            device = None
        else:
            state, device = self._generator.get_state(), self._generator.device.type
        return {"seed": self._seed, "device": device, "state": None if state is None else state.clone()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore a state from `get_rng_state` (a state saved on another device type is refused)."""
        self._seed = int(state["seed"])
        saved, device = state.get("state"), state.get("device")
        if saved is None:
            self._pending_state = None
            if self._generator is not None:
                self._generator.manual_seed(self._seed)
            return
        if self._generator is not None:
            self._check_device(device, self._generator.device)
            self._generator.set_state(saved)
        else:
            self._pending_state, self._pending_device = saved.clone(), device

    @staticmethod
    def _check_device(saved: str | None, now: torch.device) -> None:
        if saved is not None and saved != now.type:
            raise GroupRobustError(f"the augmentation's random state was saved on {saved} and cannot continue on "
                                   f"{now.type}; resume on the same kind of device", subject="device")

    def _generator_for(self, device: torch.device) -> torch.Generator:
        gen = self._generator
        if gen is None or gen.device.type != device.type or (device.index is not None and gen.device != device):
            gen = torch.Generator(device=device)
            if self._pending_state is not None:
                self._check_device(self._pending_device, gen.device)
                gen.set_state(self._pending_state)
                self._pending_state = None
            else:
                gen.manual_seed(self._seed)
            self._generator = gen
        return gen

    # -- the two paths ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float ``(B, C, image_size, image_size)`` of the stored squares ``x``."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise GroupRobustError(f"images must be (batch, {self.mean.shape[1]}, side, side), got a tensor of "
                                   f"shape {tuple(x.shape)}")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        if self.training and self.augment:
            x = self._random_resized_crop(x)
        else:
            x = self._centre_crop(x)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _centre_crop(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        side = eval_crop_side(min(height, width))
        top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
        x = x[..., top:top + side, left:left + side]
        if side != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def crop_boxes(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(batch, 4)`` float crop boxes ``(top, left, h, w)`` in pixels drawn as torchvision's
        RandomResizedCrop draws them (from the module's generator on ``device``)."""
        gen = self._generator_for(device)
        area = float(height * width)
        shape = (batch, CROP_TRIES)
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(shape, generator=gen, device=device))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, generator=gen, device=device))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # the first try that fits (0 if none)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        top = torch.floor(torch.rand(batch, generator=gen, device=device) * (height - h + 1))
        left = torch.floor(torch.rand(batch, generator=gen, device=device) * (width - w + 1))
        # No try fits: a centre crop of the ratio clamped into ``ratio`` (torchvision's fallback).
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(height * self.ratio[1])), height
        else:
            fw, fh = width, height
        fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=w.dtype, device=device)
        boxes = torch.stack([top, left, h, w], dim=1)
        return torch.where(fits.any(dim=1, keepdim=True), boxes, fallback)

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        boxes = self.crop_boxes(batch, height, width, x.device).to(x.dtype)
        top, left, h, w = boxes.unbind(1)
        # affine_grid maps the output's [-1, 1] square onto the box, in the input's normalised
        # coordinates (align_corners=False: -1 and 1 are the outer pixel edges).
        sx, sy = w / width, h / height
        cx, cy = (2 * left + w) / width - 1, (2 * top + h) / height - 1
        if self.flip:
            gen = self._generator_for(x.device)
            flips = torch.rand(batch, generator=gen, device=x.device) < 0.5
            sx = torch.where(flips, -sx, sx)
        zeros = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zeros, cx], 1), torch.stack([zeros, sy, cy], 1)], 1)
        grid = F.affine_grid(theta, [batch, x.shape[1], self.image_size, self.image_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, augment={self.augment}, scale={self.scale}, ratio={self.ratio}, "
                f"flip={self.flip}")


__all__ = ["EVAL_CROP", "ImageInput", "eval_crop_side"]
