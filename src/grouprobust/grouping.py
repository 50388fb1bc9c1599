"""`Grouper`: the one place that knows how (class, attribute) pairs become group ids and names.

A group of a dataset with ``n_classes`` classes and ``n_attrs`` values of the spurious attribute is
the pair ``(y, a)``, numbered ``g = y * n_attrs + a`` (so ``y = g // n_attrs``, ``a = g % n_attrs``),
in the spirit of WILDS' ``Grouper`` (metadata columns -> group ids, kept apart from the data). Some
datasets define their own groups instead; `Grouper.is_cross` tells whether given groups are the
(class, attribute) crossing. This module is a leaf: it imports only numpy and the project's errors.

>>> grouper = Grouper(2, 2)
>>> grouper.group_ids([0, 1, 1], [1, 0, 1]).tolist()
[1, 2, 3]
>>> grouper.names
['y=0,a=0', 'y=0,a=1', 'y=1,a=0', 'y=1,a=1']
>>> Grouper(2, 2, ["landbird", "waterbird"], ["land", "water"]).names[1]
'landbird,water'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError


@dataclass(frozen=True)
class Grouper:
    """Groups ``g = y * n_attrs + a`` of ``n_classes`` classes crossed with ``n_attrs`` attribute values.

    ``class_names`` / ``attr_names`` (optional, one per class / attribute value) name the groups
    ``"<class name>,<attr name>"``; a missing list falls back to ``y=<c>`` / ``a=<a>``. Raises
    `GroupRobustError` on counts below 1 or name lists of the wrong length.
    """

    n_classes: int
    n_attrs: int
    class_names: Sequence[str] | None = None
    attr_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for what in ("n_classes", "n_attrs"):
            value = getattr(self, what)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise GroupRobustError(f"{what} must be a whole number >= 1, got {value!r}")
            object.__setattr__(self, what, int(value))
        for what, count in (("class_names", self.n_classes), ("attr_names", self.n_attrs)):
            names = getattr(self, what)
            if names is not None:
                names = tuple(str(n) for n in names)
                if len(names) != count:
                    raise GroupRobustError(f"{len(names)} {what.replace('_', ' ')} for {count} values; give one each")
                object.__setattr__(self, what, names)

    @classmethod
    def from_groups(cls, n_groups: int, n_classes: int) -> "Grouper":
        """The smallest crossing holding ``n_groups`` group ids: ``n_attrs = ceil(n_groups / n_classes)``."""
        if n_classes < 1:
            raise GroupRobustError(f"n_classes must be a whole number >= 1, got {n_classes!r}")
        return cls(n_classes, max(-(-int(n_groups) // int(n_classes)), 1))

    @property
    def n_groups(self) -> int:
        """Number of groups, ``n_classes * n_attrs``."""
        return self.n_classes * self.n_attrs

    def group_ids(self, y: Any, a: Any) -> np.ndarray:
        """Group id of each sample, ``y * n_attrs + a``, as an int64 array of the shape of ``y``."""
        return np.asarray(y, dtype=np.int64) * self.n_attrs + np.asarray(a, dtype=np.int64)

    def class_of(self, g: Any) -> np.ndarray:
        """Class of each group id, ``g // n_attrs`` (int64 array)."""
        return np.asarray(g, dtype=np.int64) // self.n_attrs

    def attr_of(self, g: Any) -> np.ndarray:
        """Attribute value of each group id, ``g % n_attrs`` (int64 array)."""
        return np.asarray(g, dtype=np.int64) % self.n_attrs

    @property
    def names(self) -> list[str]:
        """The ``n_groups`` group names in id order: ``"<class>,<attr>"``, ``y=<c>,a=<a>`` without names."""
        classes = self.class_names or [f"y={c}" for c in range(self.n_classes)]
        attrs = self.attr_names or [f"a={a}" for a in range(self.n_attrs)]
        return [f"{c},{a}" for c in classes for a in attrs]

    def count_table(self, y: Any, a: Any) -> np.ndarray:
        """Samples per (class, attribute): int64 array of shape ``(n_classes, n_attrs)``."""
        flat = np.bincount(self.group_ids(y, a), minlength=self.n_groups)
        return flat.reshape(self.n_classes, self.n_attrs)

    def is_cross(self, g: Any, y: Any, a: Any) -> bool:
        """Whether the groups ``g`` are exactly the (class, attribute) groups ``y * n_attrs + a`` of every sample
        (False when ``g`` or ``a`` is None, or the lengths differ)."""
        if g is None or a is None:
            return False
        return bool(np.array_equal(np.asarray(g), self.group_ids(y, a)))


def split_group_names(names: list[str], n_classes: int, n_attrs: int) -> tuple[list[str], list[str]] | None:
    """The class and attribute names that the ``n_classes * n_attrs`` group names ``"<class>,<attr>"`` (in
    `Grouper` id order) were made of, or None when they cannot be told apart (one class, or names not of that form).

    An attribute's name is the longest comma-led suffix its groups share across classes; a class's name is
    what precedes it.
    """
    if n_classes < 2 or len(names) != n_classes * n_attrs:
        return None
    attrs = []
    for a in range(n_attrs):
        column = [names[c * n_attrs + a] for c in range(n_classes)]
        shared = column[0]
        for name in column[1:]:
            while not name.endswith(shared):
                shared = shared[1:]
        cut = shared.find(",")
        if cut < 0:
            return None
        attrs.append(shared[cut + 1:])
    classes = []
    for c in range(n_classes):
        prefixes = {names[c * n_attrs + a][: -len(attrs[a]) - 1] for a in range(n_attrs)}
        if len(prefixes) != 1:
            return None
        classes.append(prefixes.pop())
    return classes, attrs
