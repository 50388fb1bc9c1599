"""Small networks for embedded data, each split into a ``features`` part and a linear ``head``."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from grouprobust.backbones import ImageInput, apply_lora, check_input_kind, load_backbone
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


class BackboneFeatures(nn.Module):
    """A pretrained backbone's feature map with its input stage: ``backbone(inputs(x))``.

    ``inputs`` turns a batch as the data holds it into what the backbone reads (`ImageInput`: uint8 or
    [0, 1] images to normalised, augmented in training, crops; identity for token ids). ``frozen``
    (``finetune=head``): the backbone's weights do not train and it stays in eval mode (batch-norm
    statistics and dropout as at inference), so the head is a linear probe on fixed features.
    """

    def __init__(self, inputs: nn.Module, backbone: nn.Module, frozen: bool = False, channels_last: bool = False):
        super().__init__()
        self.inputs = inputs
        self.backbone = backbone
        self.frozen = frozen
        self.channels_last = channels_last
        if frozen:
            for p in backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "BackboneFeatures":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inputs(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)


def build_network(hparams: dict, input_shape: tuple[int, ...], n_classes: int, inputs: str = "features",
                  image_size: int | None = None, pretrained: bool = True, download: bool = False,
                  device: torch.device | None = None, seed: int = 0) -> Classifier:
    """The run's network, freshly initialised (seed torch first): the small network ``hparams["model"]`` on
    feature vectors, or ``hparams["backbone"]`` (with its ``weights`` when ``pretrained``; architecture only
    otherwise, for a run whose saved state replaces every weight) and a new linear head, fine-tuned as
    ``finetune`` says. ``inputs`` and ``image_size`` describe the data (`GroupDataset.inputs`); ``seed`` seeds the
    image input stage's augmentation draws."""
    spec = hparams.get("backbone") or ""
    if not spec:
        if inputs != "features":
            raise GroupRobustError(f"this dataset gives {'images' if inputs == 'image' else 'texts'}, which train end "
                                   "to end through a pretrained backbone: give one (--backbone SPEC, see "
                                   "docs/finetuning.md), or train on extracted features (--data features=DIR)",
                                   subject="hparam:backbone")
        return build_model(hparams["model"], input_shape, n_classes, hparams["hidden"])
    loaded = load_backbone(spec, hparams.get("weights") or None, download=download, pretrained=pretrained,
                           image_size=image_size)
    info = loaded.info
    check_input_kind(info, "image" if inputs == "image" else "text" if inputs == "tokens" else "features")
    module = loaded.module
    if hparams.get("finetune") == "lora":
        module = apply_lora(module, hparams["lora_rank"], hparams["lora_alpha"], 0.0)
    if inputs == "image":
        stage: nn.Module = ImageInput(image_size or info.input.image_size, info.input.mean, info.input.std,
                                      augment=bool(hparams.get("augment")))
        stage.seed(seed)
    else:
        stage = nn.Identity()
    channels_last = device is not None and device.type == "cuda" and info.family == "conv"
    features = BackboneFeatures(stage, module, frozen=hparams.get("finetune") == "head", channels_last=channels_last)
    return Classifier(features, loaded.feature_dim, n_classes)


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


def device_environment(device: torch.device | str) -> dict[str, Any]:
    """``config.json``'s record of where a run trains: ``device`` (e.g. ``cuda:0``), ``cuda_visible_devices``
    (as this process was given them, None when unset), the GPU's name on CUDA and, in a distributed run,
    its ``world_size`` and ``backend``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    record: dict[str, Any] = {"device": str(device), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        record["world_size"] = torch.distributed.get_world_size()
        record["backend"] = str(torch.distributed.get_backend())
    return record


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
