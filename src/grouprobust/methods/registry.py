"""The one method registry: names -> method classes, loop methods and two-stage methods alike.

A method is registered by decorating its class with `register_method`; every module of the
``grouprobust.methods`` package is imported when the registry is first read, so adding a method
is writing one module in this package and nothing else.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from grouprobust.errors import GroupRobustError

_METHODS: dict[str, type] = {}
_loaded = False


def register_method(cls: type) -> type:
    """Class decorator registering a method class under ``cls.name``: a `Method` (one run of the
    training loop) or a `TwoStageMethod` (a trained stage-1 run, then a last-layer estimator)."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise TypeError(f"two method classes are called {cls.name!r}: {_METHODS[cls.name].__qualname__} "
                        f"and {cls.__qualname__}")
    _METHODS[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("grouprobust.methods")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"grouprobust.methods.{info.name}")
    _loaded = True


def method_names() -> list[str]:
    """Every registered method name, sorted."""
    _ensure_loaded()
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The method class called ``name``; a one-line error lists the known ones."""
    _ensure_loaded()
    if name not in _METHODS:
        known = sorted(_METHODS)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GroupRobustError(f"unknown method {name!r}{hint}; choose one of: {', '.join(known)}", subject="method")
    return _METHODS[name]


def list_methods() -> list[dict]:
    """Every method as ``{"name", "needs", "kind", "summary", "same_as"}``, sorted by name.

    ``kind`` is ``loop`` (one run of the training loop) or ``two-stage``; ``same_as`` names the
    methods of other libraries this one is (e.g. SubpopBench's ``ReWeight``), empty if none.
    """
    _ensure_loaded()
    return [{"name": n, "needs": c.needs, "kind": c.kind, "summary": c.summary,
             "same_as": getattr(c, "same_as", "")} for n, c in sorted(_METHODS.items())]
