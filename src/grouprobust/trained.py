"""Reading a finished run back: `load_trained_run` rebuilds its model, config and data.

The one public way to use a trained run as an input: a two-stage method's second stage reads its
stage-1 run through it, ``gerne-pseudo`` reads its ERM reference model through it, and
`TrainedRun.features` gives the frozen features of the run's model on every split, cached on disk.

Feature cache: ``<cache>/<key>/<split>.npz`` in the format of `grouprobust.data.feature_store`,
where ``key`` hashes the SHA-256 of ``model.pt``, the dataset config (name, seed, options) and the
model architecture, so an entry is reused only for the very same weights and data. The cache
root is ``$GROUPROBUST_CACHE/features`` (default ``~/.cache/grouprobust/features``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grouprobust.config import RunConfig
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.feature_store import save_feature_splits
from grouprobust.data.fingerprint import file_sha256
from grouprobust.data.registry import input_fingerprints, load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.data.disk_cache import cache_dir
from grouprobust.models import Classifier, build_network, compute_features, pick_device
from grouprobust.output import read_json

MODEL_FILE = "model.pt"


@dataclass
class TrainedRun:
    """A finished run: its directory, `RunConfig`, stored result (None if it has no ``result.json``),
    its model (eval mode, on ``device``) and its dataset's splits."""

    path: Path
    config: RunConfig
    result: dict[str, Any] | None
    model: Classifier
    splits: DatasetSplits

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return next(self.model.parameters()).device

    def features(self, cache: Path | None = None) -> tuple[DatasetSplits, dict[str, Any]]:
        """The run dataset's splits with ``x`` replaced by ``model.features(x)``, and cache info.

        ``info`` holds ``key`` (the cache key), ``dir`` (the cache entry) and ``hits`` / ``misses``
        (splits read from the cache / computed and written to it). ``cache`` overrides `cache_root`.
        """
        key = feature_cache_key(file_sha256(self.path / MODEL_FILE), self.config)
        entry = Path(cache or cache_root()) / key
        info: dict[str, Any] = {"key": key, "dir": str(entry), "hits": [], "misses": []}
        parts = []
        for ds in self.splits:
            path = entry / f"{ds.split}.npz"
            if path.is_file():
                with np.load(path) as z:
                    feats = z["x"]
                info["hits"].append(ds.split)
            else:
                feats = compute_features(self.model, ds.x, self.device)
                info["misses"].append(ds.split)
            parts.append(replace(ds, x=feats, inputs="features"))
        source = {"run_dir": str(self.path), "cache_key": key}
        result = DatasetSplits(*parts, name=self.splits.name, description=self.splits.description,
                               meta={"source": source})
        if info["misses"]:  # save_feature_splits rewrites all splits atomically (cached ones unchanged)
            save_feature_splits(result, entry, {**source, "dataset": self.config.dataset, "seed": self.config.seed,
                                                "data": self.config.data}, force=True)  # its own cache entry
        return result, info


def load_trained_run(path: Path | str, device: torch.device | str | None = None,
                     subject: str | None = None) -> TrainedRun:
    """The finished run at ``path`` with its model rebuilt from ``config.json`` and ``model.pt``.

    Raises a one-line `GroupRobustError` (with ``subject``, e.g. the option that named the path)
    when the directory, its ``config.json`` or its ``model.pt`` is missing or does not fit.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        what = f"{path} is a file, not a run directory" if path.is_file() else \
            f"{path / MODEL_FILE} not found: there is no run directory {path}"
        raise GroupRobustError(f"{what}; pass the output directory of a finished training run", subject=subject)
    weights = path / MODEL_FILE
    if not weights.is_file():
        raise GroupRobustError(f"{_no_model(path)}; pass the output directory of a finished training run",
                               subject=subject)
    config = _stored_config(path / "config.json", subject)
    check_inputs_unchanged(path, config, subject)
    splits = load_dataset(config.dataset, config.seed, **config.data)
    hp = config.hparams
    model = build_network(hp, splits.train.input_shape, splits.train.n_classes, splits.train.inputs,
                          config.data.get("image_size") or None, pretrained=False)
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise GroupRobustError(f"{weights} does not fit the model in config.json ({first[:160]}); "
                               "the run directory is damaged, train it again", subject=subject) from None
    result = read_json(path / "result.json") if (path / "result.json").is_file() else None
    return TrainedRun(path, config, result, model.to(pick_device(device)).eval(), splits)


def _no_model(path: Path) -> str:
    """Why the directory ``path`` holds no model file: a sweep, a failed run, a run saved without its model."""
    if (path / "sweep.json").is_file() or (path / "runs").is_dir():
        return f"{path} is a sweep directory, not a run; pick one of its runs under {path / 'runs'}"
    if (path / "error.json").is_file():
        reason = read_json(path / "error.json")
        reason = reason.get("reason", "") if isinstance(reason, dict) else ""
        return f"{path} is a failed run ({str(reason)[:120] or 'see its error.json'}), which has no model"
    if not (path / "config.json").is_file():
        return f"{path} is not a run directory (no config.json or {MODEL_FILE})"
    return f"{path / MODEL_FILE} not found; the run saved no model (train it again with model saving on)"


def _stored_config(path: Path, subject: str | None) -> RunConfig:
    """The `RunConfig` in a run's ``config.json`` at ``path``; a one-line error if it is damaged."""
    stored = read_json(path)
    problem = None
    if not isinstance(stored, dict):
        problem = f"holds a JSON {type(stored).__name__}, not an object"
    else:
        missing = [k for k in ("dataset", "method", "seed") if k not in stored]
        kinds = {"dataset": str, "method": str, "data": dict, "hparams": dict, "regime": str}
        wrong = [k for k, kind in kinds.items() if k in stored and not isinstance(stored[k], kind)]
        if missing:
            problem = f"lacks {', '.join(missing)}"
        elif wrong or isinstance(stored["seed"], bool) or not isinstance(stored["seed"], int):
            problem = f"has a {(wrong or ['seed'])[0]} of the wrong type"
    if problem is not None:
        raise GroupRobustError(f"{path} {problem}; the run directory is damaged, train it again", subject=subject)
    return RunConfig.from_dict(stored)


def check_inputs_unchanged(path: Path, config: RunConfig, subject: str | None = None) -> None:
    """Refuse a run whose dataset files changed since it trained (its recorded `RunConfig.inputs` differ
    from the files' contents now): its model, held-out indices and groups no longer match the data.
    Runs recorded before fingerprints existed are not checked."""
    now = input_fingerprints(config.dataset, config.data)
    for option, recorded in config.dataset_inputs().items():
        if option not in now or now[option] == recorded:
            continue
        raise GroupRobustError(f"{path} was trained on {config.dataset} {option}={config.data.get(option)} with other "
                               f"contents ({recorded[:19]}..., now {now[option][:19]}...); train it again on the "
                               "current file, or restore the file it was trained on", subject=subject)


def cache_root() -> Path:
    """Root of the feature cache: the ``features`` folder of `grouprobust.data.cache_dirs.cache_root`."""
    return cache_dir("features")


def feature_cache_key(model_sha256: str, config: RunConfig) -> str:
    """16 hex characters identifying (model weights, dataset config, the contents of its input files,
    architecture)."""
    key = {"model": model_sha256, "dataset": config.dataset, "seed": config.seed, "data": config.data,
           "arch": [config.hparams.get("model"), config.hparams.get("hidden")]}
    if config.hparams.get("backbone"):  # left out otherwise: existing cache entries keep their keys
        key["backbone"] = [config.hparams["backbone"], config.hparams.get("finetune")]
    inputs = input_fingerprints(config.dataset, config.data)  # the files as they are now: what the features are of
    if inputs:  # only when there are any: existing cache entries of embedded datasets keep their keys
        key["inputs"] = inputs
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_features(path: Path | str, cache: Path | None = None, device: torch.device | str | None = None
                 ) -> tuple[DatasetSplits, dict[str, Any]]:
    """`TrainedRun.features` of the finished run at ``path``: ``(feature splits, cache info)``."""
    return load_trained_run(path, device).features(cache)
