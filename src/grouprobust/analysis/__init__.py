"""Mechanism analyses: head alignment and strong convexity, DCI completeness, the implicit bias of reweighting.

Names are imported lazily, so that loading the ``grouprobust analyze`` commands stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DCIResult": "dci_metrics", "completeness_per_factor": "dci_metrics", "dci": "dci_metrics",
    "disentanglement": "dci_metrics",
    "centered_weights": "geometry", "cosine": "geometry",
    "ImplicitBiasSetting": "implicit_bias", "run_implicit_bias": "implicit_bias", "six_digits": "implicit_bias",
    "alignment_sweep": "alignment", "alignment_bound": "convexity", "completeness_runs": "completeness",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'grouprobust.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"grouprobust.analysis.{_EXPORTS[name]}"), name)
