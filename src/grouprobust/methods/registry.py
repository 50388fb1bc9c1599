"""The method registry: names → method classes (end-to-end methods in the one training loop)."""

from __future__ import annotations

import difflib

from grouprobust.errors import GroupRobustError

_METHODS: dict[str, type] = {}
_EXTRA_ENTRIES: dict[str, dict] = {}

# Modules whose import registers methods; new method modules are added here.
_METHOD_MODULES = ["grouprobust.methods.erm", "grouprobust.methods.reweighting", "grouprobust.methods.dro",
                   "grouprobust.methods.jtt", "grouprobust.methods.gerne"]
# Modules whose import registers pipelines (methods that are not one run of the loop, e.g. last-layer retraining).
_PIPELINE_MODULES = ["grouprobust.lastlayer.pipelines"]
_PIPELINES: dict[str, type] = {}


def register_method(cls: type) -> type:
    """Class decorator registering a `Method` subclass under ``cls.name``."""
    _METHODS[cls.name] = cls
    return cls


def register_entry(name: str, needs: str, summary: str) -> None:
    """Register a non-loop method (e.g. a last-layer pipeline run by `train`) for listings."""
    _EXTRA_ENTRIES[name] = {"name": name, "needs": needs, "summary": summary}


def register_pipeline(cls: type) -> type:
    """Class decorator registering a pipeline under ``cls.name`` (and listing it like `register_entry`).

    A pipeline class declares ``name``, ``needs``, ``summary`` and ``params`` like a `Method`, and a
    classmethod ``run(config, out, device, on_epoch) -> result`` that `grouprobust.train.run` calls.
    """
    _PIPELINES[cls.name] = cls
    register_entry(cls.name, cls.needs, cls.summary)
    return cls


def get_pipeline(name: str) -> type | None:
    """The pipeline class called ``name``, or None when ``name`` is not a pipeline."""
    _ensure_loaded()
    return _PIPELINES.get(name)


def _ensure_loaded() -> None:
    import importlib

    for module in _METHOD_MODULES + _PIPELINE_MODULES:
        importlib.import_module(module)


def get_method(name: str) -> type:
    """The method class called ``name``; a one-line error lists the known ones."""
    _ensure_loaded()
    if name not in _METHODS:
        known = sorted(set(_METHODS) | set(_EXTRA_ENTRIES))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GroupRobustError(f"unknown method {name!r}{hint}; choose one of: {', '.join(known)} (see `grouprobust methods`)")
    return _METHODS[name]


def list_methods() -> list[dict]:
    """Every method as ``{"name", "needs", "summary"}``, sorted by name."""
    _ensure_loaded()
    rows = {n: {"name": n, "needs": c.needs, "summary": c.summary} for n, c in _METHODS.items()}
    rows.update(_EXTRA_ENTRIES)
    return [rows[k] for k in sorted(rows)]


