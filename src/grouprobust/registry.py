"""`Registry`: the one way the project names its pluggable parts.

Methods, datasets, losses, group-inference methods and selection rules each live in a `Registry`:
the modules that define them register each entry with a decorator (`Registry.register`, or a
registry's own decorator built on it, e.g. `grouprobust.methods.register_method`), and the registry
imports its ``discover`` modules the first time it is read (a package there: every module in it),
so that adding an entry is writing it where it belongs and nothing else. The listing commands
(``grouprobust methods``, ``datasets``, ``losses``, ``selection-rules``) read the registries.

A registry is a read-only mapping from names to entries, in registration order. A leaf module: it
imports only the standard library and the project's errors.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from grouprobust.errors import GroupRobustError

T = TypeVar("T")


def unknown_name(kind: str, name: str, known: list[str], how: str = "", subject: str | None = None
                 ) -> GroupRobustError:
    """The one-line error for an unknown ``name`` of ``kind``: the closest known name, then all of them, sorted."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    tail = f" ({how})" if how else ""
    return GroupRobustError(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(sorted(known))}{tail}",
                            subject=subject, lists_choices=not how)


class Registry(Mapping[str, T], Generic[T]):
    """Names -> entries of one ``kind`` (``"method"``, ``"dataset"`` ...), filled by `register` and by
    importing the ``discover`` modules on first read. ``subject`` is what an unknown name's error is about
    (the CLI turns it into the flag that sets it)."""

    def __init__(self, kind: str, discover: tuple[str, ...] = (), subject: str | None = None):
        self.kind, self.discover, self.subject = kind, tuple(discover), subject
        self._entries: dict[str, T] = {}
        self._loaded = not self.discover
        self._loading = False

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; returns it. Two different entries may not share a name."""
        known = self._entries.get(name)
        if known is not None and known is not entry and known != entry:
            raise TypeError(f"two {self.kind} entries are called {name!r}")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated object as ``name``."""
        return lambda entry: self.add(name, entry)

    def get_entry(self, name: str) -> T:
        """The entry called ``name``; a one-line `GroupRobustError` names the closest and the known ones."""
        if name not in self:
            raise unknown_name(self.kind, name, list(self), subject=self.subject)
        return self[name]

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True  # a discovered module may read the registry while it registers
        try:
            for name in self.discover:
                module = importlib.import_module(name)
                for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                    importlib.import_module(f"{name}.{info.name}")
            self._loaded = True
        finally:
            self._loading = False

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
