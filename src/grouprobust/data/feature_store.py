"""On-disk feature sets: train/val/test splits whose ``x`` are feature vectors.

Layout of a feature directory: ``train.npz``, ``val.npz``, ``test.npz`` (arrays ``x``, ``y`` and,
when present, ``a``, ``g``, ``eval_groups``) and ``meta.json`` (dataset name, class/attribute counts,
group names, where the features came from). Written as a whole (staged, then moved into place under
the directory's claim, `grouprobust.outdir`); readable by `load_feature_splits`
and usable directly by the last-layer methods and by training with ``model=linear``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.outdir import OutputDirectory, check_output_path, files_in_the_way
from grouprobust.output import missing_file, read_json, save_npz_atomic, write_json_atomic

SPLITS = ("train", "val", "test")
FILES = tuple(f"{split}.npz" for split in SPLITS) + ("meta.json",)


def check_feature_target(directory: Path, force: bool = False, subject: str = "out") -> Path:
    """``directory`` (checked by `grouprobust.outdir.check_output_path`) if a feature set may be written
    there: unless ``force`` it must hold none of the files a feature set consists of (``train.npz``,
    ``val.npz``, ``test.npz``, ``meta.json``), whoever wrote them. Raises a one-line `GroupRobustError`
    otherwise."""
    directory = check_output_path(directory, "feature directory", subject)
    _refuse_feature_files(directory, force)
    return directory


def _refuse_feature_files(directory: Path, force: bool) -> None:
    """Unless ``force``, a one-line error when ``directory`` holds any file of a feature set."""
    present = files_in_the_way(directory, FILES)
    if present and not force:
        what = "a feature set" if "meta.json" in present else ", ".join(present)
        raise GroupRobustError(f"{directory} already holds {what}; choose another output directory, or set force "
                               "to replace those files", subject="force")


def save_feature_splits(splits: DatasetSplits, directory: Path, source: dict[str, Any] | None = None,
                        force: bool = False) -> Path:
    """Write ``splits`` (whose ``x`` are features) to ``directory``; returns the directory.

    Refuses (`check_feature_target`) to replace any ``train/val/test.npz`` or ``meta.json`` already
    there unless ``force``; other files in the directory are never touched."""
    directory = check_feature_target(directory, force)
    output = OutputDirectory(directory, "feature directory")
    with output.claim():
        _refuse_feature_files(directory, force)  # again under the claim: another process may have written them
        output.remove_stale_stages()
        with output.staging() as stage:
            for ds in splits:
                arrays = {"x": ds.x, "y": ds.y}
                for key in ("a", "g", "eval_groups"):
                    if getattr(ds, key) is not None:
                        arrays[key] = getattr(ds, key)
                save_npz_atomic(stage / f"{ds.split}.npz", **arrays)
            train = splits.train
            write_json_atomic(stage / "meta.json", {
                "dataset": splits.name, "n_classes": train.n_classes, "n_attrs": train.n_attrs,
                "group_names": train.group_names, "eval_group_names": train.eval_group_names,
                "feature_dim": int(np.prod(train.x.shape[1:])), "source": source or {},
            })
            output.publish(stage, FILES)  # meta.json last: the set is complete once it is there
    return directory


def load_feature_splits(directory: Path) -> DatasetSplits:
    """Read a feature directory written by `save_feature_splits`; a one-line error for a missing or damaged
    file, or a split whose rows have another number of features than the training split's."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise GroupRobustError(f"{missing_file(meta_path, 'feature set file')}; point to a directory written by "
                               "`grouprobust features` or save_feature_splits")
    meta = _read_meta(meta_path)
    parts = []
    for split in SPLITS:
        path = directory / f"{split}.npz"
        if not path.is_file():
            raise GroupRobustError(f"{path} not found; the feature directory is incomplete, extract the features again")
        arrays = _read_arrays(path)
        if parts:
            _check_width(path, arrays["x"], parts[0].x)
        parts.append(GroupDataset(arrays["x"], arrays["y"], arrays.get("a"), meta["n_classes"], meta["n_attrs"], split,
                                  meta.get("dataset", "features"), g=arrays.get("g"), group_names=meta.get("group_names"),
                                  eval_groups=arrays.get("eval_groups"), eval_group_names=meta.get("eval_group_names")))
    return DatasetSplits(*parts, name=meta.get("dataset", "features"), meta={"source": meta.get("source", {})})


def _width(x: np.ndarray) -> str:
    """How many features each row of ``x`` has, in words: ``1024 features``, else ``x of shape (8, 3, 4)``."""
    return f"{x.shape[1]} features" if x.ndim == 2 else f"x of shape {tuple(x.shape)}"


def _check_width(path: Path, x: np.ndarray, train_x: np.ndarray) -> None:
    """A one-line error unless the rows of ``x`` (read from ``path``) have the shape of the training rows: a
    model fitted on the training features could not score the others."""
    if x.shape[1:] != train_x.shape[1:]:
        raise GroupRobustError(f"{path} has {_width(x)} but train.npz has {_width(train_x)}; the feature directory "
                               "mixes splits of different extractions, extract the features again")


def _read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` as a dict whose class and attribute counts are positive integers; else a one-line error."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise GroupRobustError(f"{path} holds a JSON {type(meta).__name__}, not an object; the feature directory is "
                               "damaged, extract the features again")
    for key in ("n_classes", "n_attrs"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GroupRobustError(f"{path}: {key} must be a positive integer, got {value!r}; the feature directory "
                                   "is damaged, extract the features again")
    for key in ("group_names", "eval_group_names"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise GroupRobustError(f"{path}: {key} must be a list of names, got {value!r}; the feature directory is "
                                   "damaged, extract the features again")
    if not isinstance(meta.get("dataset", "features"), str) or not isinstance(meta.get("source", {}), dict):
        raise GroupRobustError(f"{path}: dataset must be a name and source an object; the feature directory is "
                               "damaged, extract the features again")
    return meta


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one split's ``.npz``, which must hold ``x`` and ``y``; else a one-line error."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile, AttributeError) as err:
        raise GroupRobustError(f"{path} is not a readable .npz file ({type(err).__name__}); the feature directory is "
                               "damaged, extract the features again") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise GroupRobustError(f"{path} has no array {missing[0]!r}; the feature directory is damaged, extract the "
                               "features again")
    return arrays


__all__ = ["FILES", "SPLITS", "check_feature_target", "load_feature_splits", "save_feature_splits"]
