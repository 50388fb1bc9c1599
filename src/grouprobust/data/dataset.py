"""`GroupDataset`: one split of a dataset with labels, spurious attributes and groups."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from grouprobust.data.rows import IndexedRows
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper

#: What a split's ``x`` holds: feature vectors (float32, in memory), images (uint8) or token ids (ints).
INPUT_KINDS = ("features", "image", "tokens")


def _as_int_array(values: Any, what: str, split: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise GroupRobustError(f"{split}: {what} must be one-dimensional, got shape {arr.shape}; pass one value per sample")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise GroupRobustError(f"{split}: {what} contains NaN or inf; remove or fill those samples")
        if not np.all(arr == np.round(arr)):
            raise GroupRobustError(f"{split}: {what} must be whole numbers 0..k-1, found fractional values")
        if arr.size and np.abs(arr).max() >= 2.0 ** 63:  # beyond int64: the cast below would wrap it
            raise GroupRobustError(f"{split}: {what} must be whole numbers 0..k-1, found {np.abs(arr).max():g}")
    elif arr.dtype.kind not in "iub":
        raise GroupRobustError(f"{split}: {what} must be integers 0..k-1, got dtype {arr.dtype}; encode the labels as integers first")
    return arr.astype(np.int64)


@dataclass
class GroupDataset:
    """One split: inputs ``x``, labels ``y``, spurious attributes ``a`` and groups ``g``.

    ``g`` defaults to the (class, attribute) groups ``y * n_attrs + a`` of `grouper`. ``a`` and ``g``
    may be ``None`` when a split carries no group labels (or a method must not see them). ``eval_groups`` is an optional boolean
    membership matrix ``(n, m)`` of possibly overlapping evaluation groups (CivilComments-style).
    Construction validates lengths, ranges and finiteness and raises `GroupRobustError`.
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray | None
    n_classes: int
    n_attrs: int
    split: str = "train"
    name: str = "dataset"
    g: np.ndarray | None = None
    group_names: list[str] | None = None
    eval_groups: np.ndarray | None = None
    eval_group_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: str = "features"

    def __post_init__(self) -> None:
        where = f"{self.name}/{self.split}"
        if self.inputs not in INPUT_KINDS:
            raise GroupRobustError(f"{where}: inputs must be one of {', '.join(INPUT_KINDS)}, got {self.inputs!r}")
        if self.inputs == "features":
            self._check_features(where)
        else:
            self._check_raw_inputs(where)
        n = len(self.x)
        if n == 0:
            raise GroupRobustError(f"{where}: the split is empty; check the split column or the dataset size options")
        self.y = _as_int_array(self.y, "y", where)
        if len(self.y) != n:
            raise GroupRobustError(f"{where}: x has {n} samples but y has {len(self.y)}; they must match")
        if self.n_classes < 2:
            raise GroupRobustError(f"{where}: n_classes must be at least 2, got {self.n_classes}")
        if self.n_attrs < 1:
            raise GroupRobustError(f"{where}: n_attrs must be at least 1, got {self.n_attrs}; use 1 without attributes")
        if self.y.min() < 0 or self.y.max() >= self.n_classes:
            raise GroupRobustError(f"{where}: y values must lie in 0..{self.n_classes - 1}, found {self.y.min()}..{self.y.max()}")
        if self.a is not None:
            self.a = _as_int_array(self.a, "a", where)
            if len(self.a) != n:
                raise GroupRobustError(f"{where}: x has {n} samples but a has {len(self.a)}; they must match")
            if self.a.min() < 0 or self.a.max() >= self.n_attrs:
                raise GroupRobustError(f"{where}: attribute values must lie in 0..{self.n_attrs - 1}, found {self.a.min()}..{self.a.max()}")
            if self.g is None:
                self.g = self.grouper.group_ids(self.y, self.a)
        if self.g is not None:
            self.g = _as_int_array(self.g, "g", where)
            if len(self.g) != n:
                raise GroupRobustError(f"{where}: x has {n} samples but g has {len(self.g)}; they must match")
            if self.g.min() < 0 or self.g.max() >= self.n_groups:
                raise GroupRobustError(f"{where}: group ids must lie in 0..{self.n_groups - 1}, found {self.g.min()}..{self.g.max()}")
        if self.group_names is None:
            self.group_names = self.grouper.names
        elif len(self.group_names) != self.n_groups:
            raise GroupRobustError(f"{where}: {len(self.group_names)} group names for {self.n_groups} groups; give one name per group")
        if self.eval_groups is not None:
            eg = np.asarray(self.eval_groups)
            if eg.ndim != 2 or eg.shape[0] != n:
                raise GroupRobustError(f"{where}: eval_groups must be a boolean matrix of shape ({n}, m), got {eg.shape}")
            self.eval_groups = eg.astype(bool)
            m = eg.shape[1]
            if self.eval_group_names is None:
                self.eval_group_names = [f"eval{j}" for j in range(m)]
            elif len(self.eval_group_names) != m:
                raise GroupRobustError(f"{where}: {len(self.eval_group_names)} evaluation-group names for {m} groups")

    def _check_features(self, where: str) -> None:
        x = np.asarray(self.x)
        if x.dtype.kind not in "fiub":
            raise GroupRobustError(f"{where}: x must be numeric, got dtype {x.dtype}")
        if x.ndim < 2:
            raise GroupRobustError(f"{where}: x must have shape (n, ...) with at least one feature, got {x.shape}")
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.all(np.isfinite(self.x)):
            bad = int((~np.isfinite(self.x.reshape(len(self.x), -1))).any(axis=1).sum())
            raise GroupRobustError(f"{where}: x contains NaN or inf in {bad} samples; clean or drop them before building the dataset")

    def _check_raw_inputs(self, where: str) -> None:
        """Images (uint8 ``(n, C, H, W)``) and token ids (integer ``(n, 2, L)``: ids and attention mask) stay as they
        are, usually memory-mapped: they are read a batch at a time (`IndexedRows`), never copied whole."""
        if not isinstance(self.x, IndexedRows):
            self.x = IndexedRows(self.x)
        want_dims, kinds = (4, "u") if self.inputs == "image" else (3, "iu")
        if self.x.ndim != want_dims or self.x.dtype.kind not in kinds or \
                (self.inputs == "tokens" and self.x.shape[1] != 2):
            shape = "uint8 (n, channels, height, width)" if self.inputs == "image" else "integer (n, 2, length)"
            raise GroupRobustError(f"{where}: {self.inputs} inputs must be {shape}, got {self.x.dtype} {self.x.shape}")
        if len(self.x) == 0:
            raise GroupRobustError(f"{where}: the split is empty; check the split column or the dataset size options")

    @property
    def grouper(self) -> Grouper:
        """The (class, attribute) `Grouper` of this dataset's ``n_classes`` and ``n_attrs``."""
        return Grouper(self.n_classes, self.n_attrs)

    @property
    def n_groups(self) -> int:
        """Number of (class, attribute) groups, ``n_classes * n_attrs``."""
        return self.grouper.n_groups

    @property
    def has_groups(self) -> bool:
        """Whether this split carries group labels."""
        return self.g is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)

    def group_counts(self) -> np.ndarray:
        """Samples per group, shape ``(n_groups,)``; raises if the split has no group labels."""
        if self.g is None:
            raise GroupRobustError(f"{self.name}/{self.split}: this split carries no group labels")
        return np.bincount(self.g, minlength=self.n_groups)

    def class_counts(self) -> np.ndarray:
        """Samples per class, shape ``(n_classes,)``."""
        return np.bincount(self.y, minlength=self.n_classes)

    def empty_groups(self) -> list[str]:
        """Names of the groups with no sample in this split (reported, never dropped)."""
        if self.g is None:
            return []
        return [self.group_names[i] for i, c in enumerate(self.group_counts()) if c == 0]

    def without_groups(self) -> "GroupDataset":
        """A copy carrying no attribute, group or evaluation-group labels (for methods not given them)."""
        return replace(self, a=None, g=None, eval_groups=None, eval_group_names=None,
                       meta={k: v for k, v in self.meta.items() if not k.startswith("group")})

    def subset(self, index: np.ndarray, split: str | None = None) -> "GroupDataset":
        """The samples at ``index`` (integer indices or boolean mask) as a new dataset."""
        index = np.asarray(index)
        return replace(
            self,
            x=self.x.take(index) if isinstance(self.x, IndexedRows) else self.x[index], y=self.y[index],
            a=None if self.a is None else self.a[index],
            g=None if self.g is None else self.g[index],
            eval_groups=None if self.eval_groups is None else self.eval_groups[index],
            split=split or self.split,
        )


@dataclass
class DatasetSplits:
    """The train / val / test splits of one dataset, plus its description."""

    train: GroupDataset
    val: GroupDataset
    test: GroupDataset
    name: str = "dataset"
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def split(self, name: str) -> GroupDataset:
        """The split called ``name`` (train, val or test)."""
        if name not in ("train", "val", "test"):
            raise GroupRobustError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)
