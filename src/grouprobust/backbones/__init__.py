"""Backbones as trainable feature modules: a spec (a torchvision name, ``timm:NAME``, ``hf:DIR``, a
transformers or sentence-transformers name, ``package.module:callable``, a TorchScript or ``.pt2`` file)
-> `Backbone` (``module`` mapping inputs to ``(B, feature_dim)``), its `BackboneInfo` from config files
alone, its tokenizer, LoRA adapters; and `ImageInput`, which turns stored images into what an image backbone
reads (augmented on the device).

torch is imported by the functions here on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from grouprobust.backbones.spec import (IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneInfo, InputSpec,
                                        check_input_kind, classify_spec)

# these import torch (and transformers or peft when called): loaded on first use
_LAZY = {"describe_backbone": "grouprobust.backbones.loading", "load_backbone": "grouprobust.backbones.loading",
         "load_tokenizer": "grouprobust.backbones.loading", "apply_lora": "grouprobust.backbones.lora",
         "ImageInput": "grouprobust.backbones.image_input"}

__all__ = ["Backbone", "BackboneInfo", "IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "check_input_kind",
           "classify_spec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grouprobust.backbones' has no attribute {name!r}")
