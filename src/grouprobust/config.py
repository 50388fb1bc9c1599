"""The fully resolved configuration of one run, and its id (a hash of what determines the numbers)."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from grouprobust.errors import GroupRobustError


@dataclass
class RunConfig:
    """Dataset (with options), method (with every hyper-parameter), seed, label regime and selection rule."""

    dataset: str
    method: str
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    regime: str = "full"
    select: str = "val_worst_group_acc"

    @property
    def run_id(self) -> str:
        """12 hex characters hashing everything that determines the run's numbers."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """The config as written to ``config.json``: fields, run id and package versions."""
        return {**asdict(self), "run_id": self.run_id, "versions": package_versions()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of `to_dict` (extra keys ignored)."""
        return cls(**{k: d[k] for k in ("dataset", "method", "seed", "data", "hparams", "regime", "select") if k in d})


def package_versions() -> dict[str, str]:
    """Versions of Python, grouprobust, torch, numpy and scikit-learn (read from metadata, no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("grouprobust", "torch", "numpy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def resolve_config(dataset: str, method: str, seed: int = 0, data: dict[str, Any] | None = None,
                   hparams: dict[str, Any] | None = None, regime: str = "full", select: str | None = None
                   ) -> RunConfig:
    """Validate names and fill in every default; raises `GroupRobustError` for bad input.

    ``select`` defaults to validation worst-group accuracy, or worst-class accuracy when the
    regime gives no group labels.
    """
    from grouprobust.data.registry import get_dataset_entry, resolve_dataset_options
    from grouprobust.hparams import resolve_hparams
    from grouprobust.losses import get_loss
    from grouprobust.methods.base import REGIMES
    from grouprobust.methods.registry import get_method, get_pipeline
    from grouprobust.selection import DEFAULT_RULE, DEFAULT_RULE_NO_GROUPS, check_rule_for_regime, get_rule

    if regime not in REGIMES:
        raise GroupRobustError(f"unknown label regime {regime!r}; use one of: {', '.join(REGIMES)}")
    entry = get_dataset_entry(dataset)
    method_cls = get_pipeline(method) or get_method(method)
    if REGIMES.index(method_cls.needs) > REGIMES.index(regime):
        raise GroupRobustError(f"method {method!r} needs group labels on {_needs_text(method_cls.needs)} but the regime "
                               f"{regime!r} gives {_needs_text(regime)}; use --regime {method_cls.needs} or another method")
    data_options = resolve_dataset_options(dataset, data)
    resolved = resolve_hparams(method_cls, hparams, entry.train_defaults)
    get_loss(resolved["loss"])
    # a method may fix its rule (e.g. GSR selects its outer step by validation worst-group accuracy)
    default_rule = getattr(method_cls, "select", None) or entry.train_defaults.get("select", DEFAULT_RULE)
    rule = get_rule(select or (default_rule if regime != "none" else DEFAULT_RULE_NO_GROUPS))
    check_rule_for_regime(rule, regime)
    if int(resolved["epochs"]) < 1 or int(resolved["batch_size"]) < 1 or float(resolved["lr"]) <= 0:
        raise GroupRobustError("epochs and batch_size must be >= 1 and lr > 0; fix the --set/--epochs values")
    return RunConfig(dataset, method, int(seed), data_options, resolved, regime, rule.name)


def _needs_text(level: str) -> str:
    return {"none": "no split", "val": "validation only", "full": "train and validation"}[level]
