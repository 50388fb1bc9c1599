"""Any image ``nn.Module`` as a feature module: its classifier cut, its output reduced to ``(B, D)``.

The one generic path of torchvision, timm, factory, TorchScript and ``torch.export`` backbones: the last
``nn.Linear`` is cut (replaced by ``nn.Identity``) when the module's output is that layer's output, then
the output is the feature when of rank 2, average-pooled over space when of rank 4 (conv maps), and
refused otherwise. The feature dimension is measured with one forward pass on a dummy batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grouprobust.backbones.weights import last_linear
from grouprobust.errors import GroupRobustError

PROBE_BATCH = 2


def to_features(out: Any, spec: str) -> torch.Tensor:
    """A module's output as ``(B, D)`` features: rank 2 as it is, rank 4 ``(B, C, H, W)`` averaged over space."""
    if isinstance(out, (tuple, list)):  # e.g. torchvision's Inception in training mode: (logits, aux)
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise GroupRobustError(f"backbone {spec!r} returns {type(out).__name__}, not a tensor; make it return a "
                               "(batch, features) tensor", subject="backbone")
    if out.dim() == 2:
        return out
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    raise GroupRobustError(f"backbone {spec!r} returns outputs of shape {tuple(out.shape)}; a backbone must return "
                           "(batch, features) or (batch, channels, height, width) feature maps", subject="backbone")


class ImageFeatures(nn.Module):
    """``model(x)`` as ``(B, D)`` features (`to_features`)."""

    def __init__(self, model: nn.Module, spec: str):
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_features(self.model(x), self.spec)


class FrozenModeFeatures(ImageFeatures):
    """Features of a ``torch.export`` module, whose dropout and batch-norm behaviour was fixed when it was
    exported: ``train()``/``eval()`` only set this wrapper's flag (the exported module refuses them)."""

    def train(self, mode: bool = True) -> "FrozenModeFeatures":
        self.training = mode
        return self


def probe_batch(image_size: int, channels: int = 3) -> torch.Tensor:
    """A dummy image batch ``(PROBE_BATCH, channels, image_size, image_size)`` (zero mean, unit variance)."""
    return torch.randn(PROBE_BATCH, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))


def run_probe(module: nn.Module, batch: torch.Tensor, spec: str, frozen_mode: bool = False) -> Any:
    """``module(batch)`` in eval mode without gradients (the mode restored); a failure is one line naming the
    batch shape tried."""
    was_training = module.training
    if not frozen_mode:
        module.eval()
    try:
        with torch.no_grad():
            return module(batch)
    except GroupRobustError:
        raise
    except Exception as err:  # the module cannot take this input: say which size was tried
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise GroupRobustError(f"backbone {spec!r} fails on a batch of shape {tuple(batch.shape)} ({first[:200]}); "
                               "give the image size it takes (image_size)", subject="backbone") from None
    finally:
        if not frozen_mode:
            module.train(was_training)


def cut_final_linear(model: nn.Module, batch: torch.Tensor, spec: str) -> str | None:
    """Replace the last ``nn.Linear`` of ``model`` by ``nn.Identity`` when ``model``'s output is that layer's
    output (its classifier); returns the layer's name, or None when nothing was cut."""
    head = last_linear(model)
    if head is None:
        return None
    seen: list[Any] = []
    handle = model.get_submodule(head).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = run_probe(model, batch, spec)
    finally:
        handle.remove()
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not seen or out is not seen[-1]:
        return None
    parent, _, child = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return head


def feature_module(model: nn.Module, spec: str, image_size: int, frozen_mode: bool = False,
                   cut: bool = True) -> tuple[nn.Module, int, dict[str, Any]]:
    """``(module, feature_dim, report)``: ``model`` with its classifier cut (when ``cut``), as `ImageFeatures`,
    its feature dimension measured on a dummy batch at ``image_size`` px."""
    batch = probe_batch(image_size)
    head = cut_final_linear(model, batch, spec) if cut else None
    wrapper = (FrozenModeFeatures if frozen_mode else ImageFeatures)(model, spec)
    dim = int(run_probe(wrapper, batch, spec, frozen_mode).shape[1])
    return wrapper, dim, {"cut": head}


def module_family(model: Any) -> str:
    """"transformer" when ``model`` holds an attention layer (by class name, a TorchScript module's original
    name or an exported graph's attention/softmax calls), else "conv"."""
    for _, sub in model.named_modules():
        name = getattr(sub, "original_name", None) or type(sub).__name__
        if "Attention" in name or "attention" in name:
            return "transformer"
    graph = getattr(model, "graph", None)
    if isinstance(graph, torch.fx.Graph):
        for node in graph.nodes:
            target = str(getattr(node, "target", ""))
            if "scaled_dot_product" in target or "softmax" in target:
                return "transformer"
    return "conv"


__all__ = ["FrozenModeFeatures", "ImageFeatures", "cut_final_linear", "feature_module", "module_family",
           "probe_batch", "run_probe", "to_features"]
