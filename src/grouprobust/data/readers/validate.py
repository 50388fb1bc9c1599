"""Checks shared by the readers: each failure is one `GroupRobustError` line naming the path or column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.errors import GroupRobustError

DOCS = "see docs/datasets.md"


def find_file(root: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of ``root / candidate`` that exists; raises naming the first expected path otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise GroupRobustError(f"{root} is not a directory; the root must be the folder holding the {what} ({DOCS})",
                               subject="root")
    candidates = list(candidates)
    for c in candidates:
        if (root / c).exists():
            return root / c
    others = f" (or {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise GroupRobustError(f"{root / candidates[0]} not found{others}; expected the {what} there ({DOCS})")


def read_csv(path: Path, columns: Iterable[str], **kwargs: Any) -> pd.DataFrame:
    """``path`` read with pandas; raises if it cannot be parsed or lacks one of ``columns``."""
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise GroupRobustError(f"{path}: cannot be read as a table ({str(err).splitlines()[0]}); "
                               f"check that it is the original file ({DOCS})") from None
    require_columns(df, columns, path)
    return df


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path | str) -> None:
    """Raise naming the first of ``columns`` missing from ``df``."""
    for col in columns:
        if col not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:8])) + (" ..." if len(df.columns) > 8 else "")
            raise GroupRobustError(f"{path}: missing column {col!r}; expected it among the columns (found: {shown})")


def map_values(series: pd.Series, mapping: Mapping[Any, int], path: Path | str, column: str) -> np.ndarray:
    """``series`` mapped through ``mapping`` to integers; raises on the first value not in it."""
    lookup = {_key(k): v for k, v in mapping.items()}
    keys = series.map(_key)
    bad = ~keys.isin(list(lookup))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        allowed = ", ".join(repr(k) for k in mapping)
        raise GroupRobustError(f"{path}: column {column!r} has unexpected value {_show(series.iloc[i])} (row {i}); "
                               f"expected one of {allowed}")
    return keys.map(lookup).to_numpy(dtype=np.int64)


def _show(value: Any) -> str:
    """``repr`` of a cell without NumPy's type wrapper (``3``, not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _key(value: Any) -> Any:
    # CSV columns of 0/1 come back as int, float or str depending on the file; compare them as one kind.
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else text
    return value


def check_files_exist(paths: Iterable[Path], path: Path | str, column: str) -> None:
    """Raise naming the first listed file that does not exist."""
    for p in paths:
        if not Path(p).is_file():
            raise GroupRobustError(f"{p} not found (listed in column {column!r} of {path}); "
                                   "the images must sit where the metadata says, or pass check_files=false")


def check_nonempty_groups(table: BenchmarkTable, where: Path | str, allow_empty: bool = False,
                          splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Raise naming the first (split, group) without a sample among ``splits``, unless ``allow_empty``.

    A split with no sample at all is always an error.
    """
    counts = table.group_counts()
    for split in counts.columns:
        if (counts[split] == 0).all():
            raise GroupRobustError(f"{where}: split {split!r} has no samples; expected train, val and test rows "
                                   f"({DOCS})")
    if allow_empty:
        return
    for split in splits:
        empty = counts.index[counts[split] == 0]
        if len(empty):
            raise GroupRobustError(f"{where}: split {split!r} has no sample in group {empty[0]!r}; expected every "
                                   "group in every split (check the split and label columns, or pass "
                                   "allow_empty_groups=true to read it anyway)")


SPLIT_CODES = {0: "train", 1: "val", 2: "test"}


def split_names(codes: pd.Series, path: Path | str, column: str = "split") -> list[str]:
    """Group DRO's split codes 0/1/2 as train/val/test names; raises on any other value."""
    return [SPLIT_CODES[c] for c in map_values(codes, {k: k for k in SPLIT_CODES}, path, column)]


def image_table(name: str, df: pd.DataFrame, paths: list[str], source: Path, *, y: str, a: str, split: str,
                file_column: str, class_names: list[str], attr_names: list[str], values: Mapping[Any, int],
                check_files: bool, allow_empty_groups: bool, meta: dict | None = None) -> "BenchmarkTable":  # noqa: F821
    """A validated binary image `BenchmarkTable` from metadata columns ``y``, ``a``, ``split`` (codes 0/1/2).

    ``values`` maps the file's label values to 0/1 (e.g. CelebA's -1/1); ``paths`` are the image files.
    """
    table = pd.DataFrame({
        "path": paths,
        "y": map_values(df[y], values, source, y),
        "a": map_values(df[a], values, source, a),
        "split": split_names(df[split], source, split),
    })
    if check_files:
        check_files_exist(table["path"], source, file_column)
    out = BenchmarkTable(name, table, 2, 2, class_names, attr_names, source, meta=meta or {})
    check_nonempty_groups(out, source, allow_empty_groups)
    return out
