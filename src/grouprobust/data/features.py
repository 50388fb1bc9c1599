"""Features for last-layer methods: extracted from a run's model (cached on disk) or read from a user's file.

Extraction. `extract_features(run_dir, ...)` rebuilds the model of a run directory from its
``config.json`` and ``model.pt``, passes each split of the run's dataset through the model's
``features`` part (in batches, on the picked device) and returns the feature splits. Each split is
cached under ``<cache>/<key>/<split>.npz`` in the format of `grouprobust.data.feature_store`, where
``key`` hashes the SHA-256 of ``model.pt``, the dataset config (name, seed, options) and the model
architecture; a cache entry is therefore reused only for the very same weights and data.
The cache root is ``$GROUPROBUST_CACHE/features`` (default ``~/.cache/grouprobust/features``).

User files. `load_user_features(path)` reads features computed elsewhere:

* ``.npz`` file, ``.pt`` file (a dict, saved with ``torch.save``) or a directory of ``.npy`` files, all
  holding arrays named ``x_<split>`` (shape ``(n, d)``), ``y_<split>`` (``(n,)``, classes ``0..k-1``)
  and optionally ``a_<split>`` (spurious attribute ``0..m-1``) or ``g_<split>`` (group id), for each
  split in train, val, test (a directory holds ``x_train.npy``, ``y_train.npy``, ...);
* ``.parquet`` file: one row per sample with columns ``split`` (train/val/test), ``y``, optionally ``a``
  or ``g``, and the features in every other column (numeric), in column order.

The dataset ``features`` (``--data path=...``) accepts either a user file or a feature directory
written by `grouprobust.data.feature_store.save_feature_splits`, so
``grouprobust train --dataset features --data path=DIR --set model=linear`` trains a linear head on them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.feature_store import SPLITS, load_feature_splits, save_feature_splits
from grouprobust.data.registry import load_dataset, register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper

if TYPE_CHECKING:
    from grouprobust.config import RunConfig
    from grouprobust.models import Classifier


# -- extraction from a run directory ------------------------------------------------------------------

def cache_root() -> Path:
    """Root of the feature cache: ``$GROUPROBUST_CACHE/features`` or ``~/.cache/grouprobust/features``."""
    base = os.environ.get("GROUPROBUST_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "grouprobust") / "features"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_run_model(run_dir: Path, device: torch.device | str | None = None
                   ) -> tuple["Classifier", "RunConfig", DatasetSplits]:
    """``(model, config, splits)``: a run directory's `Classifier` with its saved weights (eval mode, on
    ``device``), its `RunConfig` and its dataset's input splits.

    Raises `GroupRobustError` when the directory, its ``config.json`` or its ``model.pt`` is missing.
    """
    from grouprobust.config import RunConfig
    from grouprobust.models import build_model, pick_device
    from grouprobust.rundir import read_json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GroupRobustError(f"run directory {run_dir} not found; pass the --out of a finished `grouprobust train` run")
    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise GroupRobustError(f"{weights} not found; the run saved no model (train it again with model saving on)")
    config = RunConfig.from_dict(read_json(run_dir / "config.json"))
    device = pick_device(device) if not isinstance(device, torch.device) else device
    splits = load_dataset(config.dataset, config.seed, **config.data)
    hp = config.hparams
    model = build_model(hp["model"], splits.train.input_shape, splits.train.n_classes, int(hp["hidden"]))
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as err:
        raise GroupRobustError(f"{weights} does not fit the model in config.json ({str(err).splitlines()[0]}); "
                               "the run directory is damaged, train it again") from None
    return model.to(device).eval(), config, splits


def feature_cache_key(model_sha256: str, config: "RunConfig") -> str:
    """16 hex characters identifying (model weights, dataset config, architecture)."""
    text = json.dumps({"model": model_sha256, "dataset": config.dataset, "seed": config.seed, "data": config.data,
                       "arch": [config.hparams.get("model"), config.hparams.get("hidden")]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def compute_features(features: torch.nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """``features(x)`` in batches on ``device``; returns float32 ``(n, feature_dim)`` on the CPU."""
    out = []
    for i in range(0, len(x), batch_size):
        batch = torch.as_tensor(x[i:i + batch_size]).to(device)
        out.append(features(batch).reshape(len(batch), -1).float().cpu())
    return torch.cat(out).numpy()


def extract_features(run_dir: Path, cache: Path | None = None, device: torch.device | str | None = None) -> tuple[DatasetSplits, dict[str, Any]]:
    """Features of a run's dataset under the run's model, ``(feature_splits, info)``.

    ``feature_splits`` has the run dataset's labels and groups with ``x`` replaced by the output of the
    model's ``features`` part. ``info`` holds ``key`` (the cache key), ``dir`` (the cache entry) and
    ``hits`` / ``misses`` (the splits read from the cache / computed and written to it). ``cache``
    overrides `cache_root`.
    """
    run_dir = Path(run_dir)
    model, config, dataset = load_run_model(run_dir, device)
    key = feature_cache_key(file_sha256(run_dir / "model.pt"), config)
    entry = Path(cache or cache_root()) / key
    info: dict[str, Any] = {"key": key, "dir": str(entry), "hits": [], "misses": []}
    device_used = next(model.parameters()).device
    parts = []
    for ds in dataset:
        path = entry / f"{ds.split}.npz"
        if path.is_file():
            with np.load(path) as z:
                feats = z["x"]
            info["hits"].append(ds.split)
        else:
            feats = compute_features(model.features, ds.x, device_used)
            info["misses"].append(ds.split)
        parts.append(_with_x(ds, feats))
    result = DatasetSplits(*parts, name=dataset.name, description=dataset.description,
                           meta={"source": {"run_dir": str(run_dir), "cache_key": key}})
    if info["misses"]:  # save_feature_splits rewrites all splits atomically (cached ones unchanged)
        save_feature_splits(result, entry, {"run_dir": str(run_dir), "cache_key": key,
                                                       "dataset": config.dataset, "seed": config.seed,
                                                       "data": config.data})
    return result, info


def _with_x(ds: GroupDataset, x: np.ndarray) -> GroupDataset:
    from dataclasses import replace

    return replace(ds, x=x)


# -- a user's own feature files -------------------------------------------------------------------------

def _arrays_from_mapping(mapping: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[str(k)] = np.asarray(v)
    return out


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Flat ``{x_train, y_train, ...}`` arrays from a .npz, .pt, or a directory of .npy files."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise GroupRobustError(f"{path} holds no .npy files; save x_train.npy, y_train.npy, x_val.npy, ... there")
        return {f.stem: np.load(f, allow_pickle=False) for f in files}
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
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
    arrays = {}
    for split in SPLITS:
        part = frame[frame["split"].astype(str) == split]
        arrays[f"x_{split}"] = part[feature_cols].to_numpy(dtype=np.float32)
        for col in ("y", "a", "g"):
            if col in frame.columns:
                arrays[f"{col}_{split}"] = part[col].to_numpy()
    return arrays


def load_user_features(path: Path | str, name: str = "features") -> DatasetSplits:
    """Train/val/test feature splits from a user's file (formats in the module docstring).

    Raises `GroupRobustError` with one line for a missing file or array, a wrong shape, mismatched
    feature dimensions or NaN/inf values.
    """
    path = Path(path)
    if not path.exists():
        raise GroupRobustError(f"feature file {path} not found; check --data path=...")
    arrays = _read_parquet(path) if path.suffix.lower() == ".parquet" else _read_arrays(path)
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
    parts = []
    for split, y in zip(SPLITS, ys):
        a = arrays.get(f"a_{split}") if has_a else None
        g = arrays.get(f"g_{split}") if (has_g and not has_a) else None
        ds = GroupDataset(arrays[f"x_{split}"], y, a, max(n_classes, 2), n_attrs, split, name, g=g)
        if not (has_a or has_g):
            ds = ds.without_groups()
        parts.append(ds)
    return DatasetSplits(*parts, name=name, meta={"source": {"path": str(path)}})


@register_dataset("features", "Features from a file: a feature directory, .npz/.pt/.parquet, or a directory of "
                  ".npy files (--data path=...). Train a head with --set model=linear.",
                  train_defaults={"model": "linear"}, embedded=False)
def features_dataset(seed: int = 0, *, path: str = "") -> DatasetSplits:
    """The feature splits at ``path`` (the seed is unused: the file fixes the data)."""
    if not path:
        raise GroupRobustError("dataset 'features' needs a file: pass --data path=FILE_OR_DIR")
    p = Path(path).expanduser()
    if p.is_dir() and (p / "meta.json").is_file():
        return load_feature_splits(p)
    return load_user_features(p)


__all__ = ["cache_root", "compute_features", "extract_features", "feature_cache_key", "file_sha256",
           "load_run_model", "load_user_features"]
