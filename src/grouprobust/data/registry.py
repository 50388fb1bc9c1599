"""The dataset registry: names → builders that return train/val/test splits."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from grouprobust.data.dataset import DatasetSplits
from grouprobust.errors import GroupRobustError
from grouprobust.options import coerce


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its builder, description and the training defaults that suit it."""

    name: str
    builder: Callable[..., DatasetSplits]
    description: str
    train_defaults: dict[str, Any] = field(default_factory=dict)
    embedded: bool = True

    def option_defaults(self) -> dict[str, Any]:
        """The builder's options (everything but ``seed``) with their defaults."""
        sig = inspect.signature(self.builder)
        return {k: p.default for k, p in sig.parameters.items() if k != "seed" and p.kind == p.KEYWORD_ONLY}


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str, train_defaults: dict[str, Any] | None = None,
                     embedded: bool = True) -> Callable:
    """Decorator registering ``builder(seed, *, **options) -> DatasetSplits`` under ``name``."""

    def wrap(builder: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
        _REGISTRY[name] = DatasetEntry(name, builder, description, dict(train_defaults or {}), embedded)
        return builder

    return wrap


def _unknown(kind: str, name: str, known: list[str], how: str) -> GroupRobustError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return GroupRobustError(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(sorted(known))} ({how})")


def get_dataset_entry(name: str) -> DatasetEntry:
    """The registry entry for ``name``; raises a one-line error listing the known names."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise _unknown("dataset", name, list(_REGISTRY), "see `grouprobust datasets`")
    return _REGISTRY[name]


def list_datasets() -> list[DatasetEntry]:
    """All registered datasets, sorted by name."""
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def resolve_dataset_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The builder's full option dict: defaults overridden by ``options`` (coerced to the defaults' types)."""
    entry = get_dataset_entry(name)
    defaults = entry.option_defaults()
    resolved = dict(defaults)
    for key, value in (options or {}).items():
        if key not in defaults:
            raise _unknown(f"option for dataset {name!r}:", key, list(defaults), "pass them as --data key=value")
        resolved[key] = coerce(value, defaults[key], f"--data {key}")
    return resolved


def load_dataset(name: str, seed: int = 0, **options: Any) -> DatasetSplits:
    """Build dataset ``name`` deterministically for ``seed``; returns its train/val/test splits."""
    entry = get_dataset_entry(name)
    resolved = resolve_dataset_options(name, options)
    splits = entry.builder(seed, **resolved)
    splits.name = name
    splits.description = splits.description or entry.description
    splits.meta.setdefault("options", resolved)
    return splits


def _ensure_loaded() -> None:
    # Importing the modules registers their datasets; done lazily to keep `import grouprobust` cheap.
    from grouprobust.data import embedded, features, readers  # noqa: F401
