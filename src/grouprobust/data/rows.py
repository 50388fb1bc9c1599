"""`IndexedRows`: some rows of a large array (a memory-mapped image cache) without copying them.

A split of a benchmark read end to end holds its inputs as uint8 images or int token ids in a file
mapped into memory; taking a subset (a held-out part, a validation half) must not read the whole
array into memory. `IndexedRows` keeps the base array and the row numbers, and reads rows only when
it is indexed: ``rows[i:j]`` and ``rows[index_array]`` return plain arrays, ``rows.take(index)``
another view.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class IndexedRows:
    """Rows ``index`` of ``base`` (an array or memmap), read on indexing; shape and dtype as an array's."""

    def __init__(self, base: np.ndarray, index: np.ndarray | None = None):
        self.base = base
        self.index = np.arange(len(base)) if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, *row_shape)``."""
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """The base array's dtype."""
        return self.base.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions, rows included."""
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        if len(rows) and isinstance(key, slice) and np.all(np.diff(rows) == 1):
            return np.array(self.base[rows[0]:rows[-1] + 1])  # a contiguous run: one read (a writable copy)
        # One copy, in the order asked. Reading in sorted order and then permuting took two: 20 ms against
        # 0.9 ms for 64 rows of 3x256x256 (benchmarks/finetune_throughput.py's gather on CUDA, per batch).
        return np.asarray(np.take(self.base, rows, axis=0))

    def take(self, index: np.ndarray) -> "IndexedRows":
        """The view of rows ``index`` (integer positions or a boolean mask) of this view, without reading them."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return IndexedRows(self.base, self.index[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)
