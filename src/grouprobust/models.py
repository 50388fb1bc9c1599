"""Small networks for embedded data, each split into a ``features`` part and a linear ``head``."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from grouprobust.errors import GroupRobustError


class Classifier(nn.Module):
    """``head(features(x))``: ``features`` maps inputs to a ``feature_dim`` vector, ``head`` is linear."""

    def __init__(self, features: nn.Module, feature_dim: int, n_classes: int):
        super().__init__()
        self.features = features
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _linear(input_shape: tuple[int, ...], hidden: int) -> tuple[nn.Module, int]:
    return nn.Flatten(), math.prod(input_shape)


def _mlp(input_shape: tuple[int, ...], hidden: int) -> tuple[nn.Module, int]:
    d = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()), hidden


def _cnn(input_shape: tuple[int, ...], hidden: int) -> tuple[nn.Module, int]:
    """Three layers, about 5k parameters for 3-channel input (GSR's Appendix E tiny CNN)."""
    if len(input_shape) != 3:
        raise GroupRobustError(f"model 'cnn' needs image inputs (channels, height, width), got shape {input_shape}; "
                               "use model=mlp", subject="hparam:model")
    c = input_shape[0]
    body = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
    )
    return body, 128


MODELS = {"linear": _linear, "mlp": _mlp, "cnn": _cnn}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, hidden: int = 64) -> Classifier:
    """A fresh `Classifier` (initialised from torch's global RNG: seed it first)."""
    if name not in MODELS:
        raise GroupRobustError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}", subject="hparam:model")
    features, dim = MODELS[name](tuple(input_shape), hidden)
    return Classifier(features, dim, n_classes)


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """``requested`` if given, else CUDA when available, else CPU."""
    if isinstance(requested, torch.device):
        return requested
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise GroupRobustError(f"unknown device {requested!r}; use cpu, cuda or cuda:N", subject="device") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GroupRobustError(f"device {requested!r} requested but no CUDA GPU is available; use the cpu",
                                   subject="device")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise GroupRobustError(f"device {requested!r} requested but this machine has "
                                   f"{torch.cuda.device_count()} CUDA GPU(s); use cuda:0 to "
                                   f"cuda:{torch.cuda.device_count() - 1}", subject="device")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision of ``amp`` on ``device``: bfloat16 on CPUs and on GPUs that support it (no
    loss scaling needed), float16 (with a ``GradScaler``) on older GPUs."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def memory_format(device: torch.device, model_name: str) -> torch.memory_format:
    """``channels_last`` for the CNN on a GPU (the layout its convolution kernels prefer), else contiguous."""
    return torch.channels_last if device.type == "cuda" and model_name == "cnn" else torch.contiguous_format


@torch.no_grad()
def forward_in_chunks(module: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | None = None,
                      chunk: int = 4096) -> torch.Tensor:
    """``module(x)`` computed ``chunk`` rows at a time on ``device`` (default: the module's) in eval
    mode (the module's mode is restored); returned on the CPU. The one batched forward pass."""
    device = device or next(module.parameters(), torch.empty(0)).device
    was_training = module.training
    module.eval()
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    try:  # torch.as_tensor per chunk: memory-mapped images (IndexedRows) are read a chunk at a time
        out = [module(torch.as_tensor(x[i:i + chunk]).to(device)).cpu() for i in range(0, len(x), chunk)]
    finally:
        module.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | None = None,
                   chunk: int = 4096) -> torch.Tensor:
    """Logits ``(n, n_classes)`` of ``model`` for all of ``x`` (`forward_in_chunks`), on the CPU."""
    return forward_in_chunks(model, x, device, chunk)


def compute_features(model: Classifier, x: np.ndarray, device: torch.device | None = None,
                     chunk: int = 1024) -> np.ndarray:
    """``model.features(x)`` flattened per row: float32 ``(n, feature_dim)`` numpy array."""
    return forward_in_chunks(model.features, x, device, chunk).reshape(len(x), -1).float().numpy()
