"""Feature files a user computed elsewhere, read as a dataset (``features``).

`load_user_features(path)` reads:

* ``.npz`` file, ``.pt`` file (a dict, saved with ``torch.save``) or a directory of ``.npy`` files, all
  holding arrays named ``x_<split>`` (shape ``(n, d)``), ``y_<split>`` (``(n,)``, classes ``0..k-1``)
  and optionally ``a_<split>`` (spurious attribute ``0..m-1``) or ``g_<split>`` (group id), for each
  split in train, val, test (a directory holds ``x_train.npy``, ``y_train.npy``, ...);
* ``.parquet`` file: one row per sample with columns ``split`` (train/val/test), ``y``, optionally ``a``
  or ``g``, and the features in every other column (numeric), in column order.

Class and attribute names are kept when the file carries them: a parquet ``y`` or ``a`` column of
text (or a pandas categorical) names the classes / attribute values by its values (sorted, or in
the categorical's order) and is encoded ``0..k-1``; beside arrays, a small JSON file
``{"class_names": [...], "attr_names": [...]}`` does the same (``names.json`` inside a directory of
``.npy`` files, ``<file>.names.json`` beside an ``.npz`` or ``.pt`` file). Groups are then named
``"<class>,<attribute>"`` by `grouprobust.grouping.Grouper`.

The dataset ``features`` (option ``path``) accepts either a user file or a feature directory
written by `grouprobust.data.feature_store.save_feature_splits`, so training with ``model=linear`` on
it trains a linear head. Features of a trained run's own model are computed (and cached) by
`grouprobust.trained.TrainedRun.features`.
"""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.feature_store import SPLITS, load_feature_splits
from grouprobust.data.registry import register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper


# -- a user's own feature files -------------------------------------------------------------------------

def _arrays_from_mapping(mapping: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[str(k)] = np.asarray(v)
    return out


@contextmanager
def _unreadable_arrays(path: Path) -> Iterator[None]:
    """Turn numpy's errors on a damaged file or one holding Python objects into one line naming ``path``."""
    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0].split(" when ")[0]
        raise GroupRobustError(f"{path} cannot be read as numeric arrays ({first[:120]}); save plain numeric arrays "
                               "(numpy.savez, no Python objects)", subject="data:path") from None


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Flat ``{x_train, y_train, ...}`` arrays from a .npz, .pt, or a directory of .npy files."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise GroupRobustError(f"{path} holds no .npy files; save x_train.npy, y_train.npy, x_val.npy, ... there")
        with _unreadable_arrays(path):
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with _unreadable_arrays(path), np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".npy":
        raise GroupRobustError(f"{path}: a single .npy file holds one array; put x_train.npy, y_train.npy, x_val.npy, "
                               "... in one directory and pass the directory")
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad user file
            raise GroupRobustError(f"{path} could not be read by torch.load ({type(err).__name__}); "
                                   "save a dict of tensors with torch.save") from None
        if not isinstance(obj, dict):
            raise GroupRobustError(f"{path} holds a {type(obj).__name__}, not a dict; save "
                                   "{'x_train': ..., 'y_train': ..., ...} with torch.save")
        return _arrays_from_mapping(obj)
    raise GroupRobustError(f"{path}: unsupported feature file type {suffix!r}; use .npz, .pt, .parquet "
                           "or a directory of .npy files")


def _names_file(path: Path) -> Path:
    return path / "names.json" if path.is_dir() else path.with_name(path.name + ".names.json")


def _read_names(path: Path) -> dict[str, list[str]]:
    """``class_names`` / ``attr_names`` from the JSON file beside ``path`` (empty when there is none)."""
    import json

    names_path = _names_file(path)
    if not names_path.is_file():
        return {}
    try:
        doc = json.loads(names_path.read_text())
    except json.JSONDecodeError as err:
        raise GroupRobustError(f"{names_path} is not valid JSON ({err.msg}); write "
                               '{"class_names": [...], "attr_names": [...]}', subject="data:path") from None
    if not isinstance(doc, dict) or set(doc) - {"class_names", "attr_names"}:
        raise GroupRobustError(f"{names_path} must hold an object with keys class_names and/or attr_names",
                               subject="data:path")
    return {k: [str(v) for v in doc[k]] for k in doc}


def _encode_named(column, what: str) -> tuple[np.ndarray, list[str] | None]:
    """A parquet label/attribute column as codes ``0..k-1`` and, for a text or categorical column, its names."""
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        if column.isna().any():
            raise GroupRobustError(f"column {what!r} has missing values; fill or drop those rows", subject="data:path")
        return column.cat.codes.to_numpy(dtype=np.int64), [str(c) for c in column.cat.categories]
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(), None
    if column.isna().any():
        raise GroupRobustError(f"column {what!r} has missing values; fill or drop those rows", subject="data:path")
    names = sorted(column.astype(str).unique())
    return column.astype(str).map({n: i for i, n in enumerate(names)}).to_numpy(dtype=np.int64), names


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise GroupRobustError("reading parquet needs pyarrow: pip install 'grouprobust[parquet]'") from None
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types for bad files
        raise GroupRobustError(f"{path} could not be read as parquet ({type(err).__name__}); check the file") from None
    for col in ("split", "y"):
        if col not in frame.columns:
            raise GroupRobustError(f"{path}: missing column {col!r}; the file needs columns split, y, "
                                   "optional a or g, and numeric feature columns")
    feature_cols = [c for c in frame.columns if c not in ("split", "y", "a", "g")]
    if not feature_cols:
        raise GroupRobustError(f"{path}: no feature columns; every column other than split/y/a/g is a feature")
    bad = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise GroupRobustError(f"{path}: feature column {bad[0]!r} is not numeric; drop it or convert it")
    unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if unknown:
        raise GroupRobustError(f"{path}: column 'split' has value {unknown[0]!r}; use train, val or test")
    arrays, names = {}, {}
    coded = {}
    for col, key in (("y", "class_names"), ("a", "attr_names"), ("g", None)):
        if col in frame.columns:
            coded[col], found = _encode_named(frame[col], col) if key else (frame[col].to_numpy(), None)
            if found is not None:
                names[key] = found
    for split in SPLITS:
        rows = (frame["split"].astype(str) == split).to_numpy()
        arrays[f"x_{split}"] = frame.loc[rows, feature_cols].to_numpy(dtype=np.float32)
        for col, values in coded.items():
            arrays[f"{col}_{split}"] = values[rows]
    return arrays, names


def load_user_features(path: Path | str, name: str = "features") -> DatasetSplits:
    """Train/val/test feature splits from a user's file (formats in the module docstring).

    Raises `GroupRobustError` with one line for a missing file or array, a wrong shape, mismatched
    feature dimensions or NaN/inf values.
    """
    path = Path(path)
    if not path.exists():
        raise GroupRobustError(f"feature file {path} not found; check the dataset option path", subject="data:path")
    if path.suffix.lower() == ".parquet":
        arrays, names = _read_parquet(path)
    else:
        arrays, names = _read_arrays(path), _read_names(path)
    for split in SPLITS:
        for key in (f"x_{split}", f"y_{split}"):
            if key not in arrays:
                raise GroupRobustError(f"{path}: missing array {key!r}; provide x_<split> and y_<split> for "
                                       "train, val and test (found: " + ", ".join(sorted(arrays)) + ")")
    dims = set()
    for split in SPLITS:
        x = arrays[f"x_{split}"]
        if x.ndim != 2:
            raise GroupRobustError(f"{path}: x_{split} must have shape (n, d), got {x.shape}; flatten the features")
        if len(x) == 0:
            raise GroupRobustError(f"{path}: x_{split} has no rows; every split needs samples (train, val and test)",
                                   subject="data:path")
        dims.add(x.shape[1])
    if len(dims) > 1:
        raise GroupRobustError(f"{path}: feature dimensions differ between splits ({sorted(dims)}); "
                               "every split needs the same number of features")
    ys = [np.asarray(arrays[f"y_{s}"]) for s in SPLITS]
    if any(y.ndim != 1 for y in ys):
        raise GroupRobustError(f"{path}: y_<split> must be one label per sample (shape (n,))")
    try:
        n_classes = max(int(np.max(y)) for y in ys if y.size) + 1
    except (TypeError, ValueError):
        raise GroupRobustError(f"{path}: y_<split> must hold integer class labels 0..k-1 without NaN") from None
    has_a = all(f"a_{s}" in arrays for s in SPLITS)
    has_g = all(f"g_{s}" in arrays for s in SPLITS)
    if has_a:
        n_attrs = int(max(int(np.max(arrays[f"a_{s}"])) for s in SPLITS)) + 1
    elif has_g:
        n_groups = int(max(int(np.max(arrays[f"g_{s}"])) for s in SPLITS)) + 1
        n_attrs = Grouper.from_groups(n_groups, n_classes).n_attrs
    else:
        n_attrs = 1
    try:
        grouper = Grouper(max(n_classes, 2), n_attrs, names.get("class_names"), names.get("attr_names"))
    except GroupRobustError as err:
        raise GroupRobustError(f"{path}: {err} (class or attribute names do not match the labels)",
                               subject="data:path") from None
    parts = []
    for split, y in zip(SPLITS, ys):
        a = arrays.get(f"a_{split}") if has_a else None
        g = arrays.get(f"g_{split}") if (has_g and not has_a) else None
        ds = GroupDataset(arrays[f"x_{split}"], y, a, max(n_classes, 2), n_attrs, split, name, g=g,
                          group_names=grouper.names)
        if not (has_a or has_g):
            ds = ds.without_groups()
        parts.append(ds)
    return DatasetSplits(*parts, name=name, meta={"source": {"path": str(path)}})


@register_dataset("features", "Features from a file: a feature directory, .npz/.pt/.parquet, or a directory of "
                  ".npy files (option path=...). Train a head with model=linear.",
                  train_defaults={"model": "linear"}, embedded=False, file_options=("path",))
def features_dataset(seed: int = 0, *, path: str = "") -> DatasetSplits:
    """The feature splits at ``path`` (the seed is unused: the file fixes the data)."""
    if not path:
        raise GroupRobustError("dataset 'features' needs a file: set the dataset option path=FILE_OR_DIR",
                               subject="data:path")
    p = Path(path).expanduser()
    if p.is_dir() and (p / "meta.json").is_file():
        return load_feature_splits(p)
    return load_user_features(p)


__all__ = ["features_dataset", "load_user_features"]
