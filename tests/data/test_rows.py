"""IndexedRows reads the rows it is asked for, in the order asked, as plain writable arrays."""

from __future__ import annotations

import numpy as np

from grouprobust.data.rows import IndexedRows


def _memmap(tmp_path, rows: int = 12) -> np.memmap:
    path = tmp_path / "rows.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 3, 4, 4))
    array[:] = np.arange(rows, dtype=np.uint8)[:, None, None, None] * 10 + np.arange(48, dtype=np.uint8).reshape(3, 4, 4) % 7
    array.flush()
    return np.load(path, mmap_mode="r")


def test_index_arrays_read_rows_in_the_order_asked(tmp_path):
    base = _memmap(tmp_path)
    view = IndexedRows(base).take(np.array([9, 2, 5, 7, 0, 11]))
    for key in (np.array([3, 0, 5, 0, 1]), np.array([5, 4, 3, 2, 1, 0]), np.array([True, False, True, True, False, True])):
        out = view[key]
        np.testing.assert_array_equal(out, np.asarray(base)[view.index[key]])
        assert type(out) is np.ndarray and out.flags.writeable
    assert view[np.array([], dtype=np.int64)].shape == (0, 3, 4, 4)


def test_slices_and_single_rows(tmp_path):
    base = _memmap(tmp_path)
    view = IndexedRows(base, np.array([4, 5, 6, 1]))
    np.testing.assert_array_equal(view[0:3], np.asarray(base)[4:7])
    np.testing.assert_array_equal(view[1:4], np.asarray(base)[[5, 6, 1]])
    np.testing.assert_array_equal(view[3], np.asarray(base)[1])
    assert view[0:3].flags.writeable and view.shape == (4, 3, 4, 4)
