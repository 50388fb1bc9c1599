"""Coercing option values (often strings from a command line or a file) to the types of their defaults."""

from __future__ import annotations

import json
from typing import Any

from grouprobust.errors import GroupRobustError


def coerce(value: Any, like: Any, name: str) -> Any:
    """Convert ``value`` (often a string from the CLI) to the type of the default ``like``."""
    if not isinstance(value, str) or isinstance(like, str):
        if isinstance(like, bool) and not isinstance(value, bool):
            raise GroupRobustError(f"{name} must be true or false, got {value!r}")
        if isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    try:
        if isinstance(like, bool):
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, (list, tuple)):
            parsed = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t]
            return list(parsed)
        if like is None:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
    except ValueError:
        kind = "true/false" if isinstance(like, bool) else type(like).__name__
        raise GroupRobustError(f"{name} must be {kind}, got {value!r}; for example {name}={like!r}") from None
    return text
