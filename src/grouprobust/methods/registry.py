"""The one method registry: names -> method classes, loop methods and two-stage methods alike.

A method is registered by decorating its class with `register_method`; every module of the
``grouprobust.methods`` package is imported when the registry is first read, so adding a method
is writing one module in this package and nothing else (`grouprobust.registry`).
"""

from __future__ import annotations

from grouprobust.registry import Registry

#: Every method class by name.
METHODS: Registry[type] = Registry("method", discover=("grouprobust.methods",), subject="method")


def register_method(cls: type) -> type:
    """Class decorator registering a method class under ``cls.name``: a `Method` (one run of the
    training loop) or a `TwoStageMethod` (a trained stage-1 run, then a last-layer estimator)."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered")
    return METHODS.add(cls.name, cls)


def method_names() -> list[str]:
    """Every registered method name, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> type:
    """The method class called ``name``; a one-line error lists the known ones."""
    return METHODS.get_entry(name)


def list_methods() -> list[dict]:
    """Every method as ``{"name", "needs", "kind", "summary", "same_as"}``, sorted by name.

    ``kind`` is ``loop`` (one run of the training loop) or ``two-stage``; ``same_as`` names the
    methods of other libraries this one is (e.g. SubpopBench's ``ReWeight``), empty if none.
    """
    return [{"name": n, "needs": c.needs, "kind": c.kind, "summary": c.summary,
             "same_as": getattr(c, "same_as", "")} for n, c in sorted(METHODS.items())]
