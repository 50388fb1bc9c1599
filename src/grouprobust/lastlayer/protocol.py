"""The two-stage last-layer protocol of GSR, run by ``grouprobust train --method gsr|gsr-hf|dfr``.

Stage 1 trains the whole model with ERM (through `grouprobust.train.run`, the one loop) on a seeded
``1 - holdout_frac`` of the training split, without group labels, for all its epochs (no early
stopping: only the last epoch is evaluated, so it is the one kept). The other ``holdout_frac`` is the
held-out set, never seen by stage 1; its indices are written to ``stage1/holdout.json``.

Stage 2 freezes the stage-1 feature extractor (features cached by `grouprobust.data.features`) and
retrains a last layer. Group labels come only from the validation split, cut into two disjoint seeded
halves (`ValHalves`): the *target* half drives the method and the *validation* half selects the model.

* ``gsr`` / ``gsr-hf``: `grouprobust.lastlayer.GSR` learns a weight for each held-out sample (no
  group labels on them) so that the head trained on the weighted held-out set does well on every
  target group; the outer step is selected by worst-group accuracy on the validation half.
* ``dfr``: `grouprobust.lastlayer.DFR` retrains the head on group-balanced subsets of the *target*
  half (DFR trains on group-labelled validation data, as in its paper) and picks its regularisation on
  the validation half. The held-out training samples are not used.

Reported ``val`` metrics are on the validation half (never trained on); ``test`` on the full test
split; ``target`` on the target half.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from grouprobust.config import RunConfig
from grouprobust.data.dataset import GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.hparams import Param
from grouprobust.metrics import dataset_metrics
from grouprobust.rundir import RunDirectory, read_json, write_json_atomic

HOLDOUT_FILE = "holdout.json"
WEIGHTS_FILE = "weights.npz"


# -- data splits -----------------------------------------------------------------------------------------

def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(remaining, heldout)``: sorted indices of a seeded random ``fraction`` of ``range(n)`` held out."""
    if not 0.0 < fraction < 1.0:
        raise GroupRobustError(f"holdout_frac must lie strictly between 0 and 1, got {fraction}; "
                               "for example --set holdout_frac=0.1")
    n_heldout = int(round(fraction * n))
    if n_heldout < 2 or n - n_heldout < 2:
        raise GroupRobustError(f"holdout_frac={fraction} of {n} training samples leaves too few on one side; "
                               "change holdout_frac")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_heldout:]), np.sort(perm[:n_heldout])


class ValHalves:
    """The group-labelled validation split cut into two disjoint seeded halves, each handed out once.

    ``take("target")`` and ``take("validation")`` return the halves (stratified by group, so each
    group is split evenly). Asking for a half a second time raises `GroupRobustError`: the half that
    drives reweighting must never also select the model (GSR, Remark in Section 4).
    """

    NAMES = ("target", "validation")

    def __init__(self, val: GroupDataset, seed: int):
        if not val.has_groups:
            raise GroupRobustError("the validation split carries no group labels; last-layer methods need them "
                                   "(use --regime val or full and a dataset with attributes)")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(val))
        order = perm[np.argsort(val.g[perm], kind="stable")]  # random order within each group
        self.val = val
        self.index = {"target": np.sort(order[0::2]), "validation": np.sort(order[1::2])}
        self._taken: set[str] = set()

    def take(self, name: str) -> GroupDataset:
        """The half called ``name`` (``target`` or ``validation``) as a dataset whose split is ``name``."""
        if name not in self.NAMES:
            raise GroupRobustError(f"unknown validation half {name!r}; use target or validation")
        if name in self._taken:
            raise GroupRobustError(f"the {name} half of the validation split was already handed out; the target "
                                   "and validation halves must be used once each, for different purposes")
        self._taken.add(name)
        return self.val.subset(self.index[name], split=name)


# -- stage 1 ---------------------------------------------------------------------------------------------

def resolve_stage1_dir(path: str | Path) -> Path:
    """The stage-1 run directory for ``--from PATH``: PATH itself, or PATH/stage1 for a pipeline run.

    Raises a one-line error when PATH does not exist or holds no ``model.pt``.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise GroupRobustError(f"--from {path}: no such directory; pass the --out of a finished training run")
    for candidate in (path / "stage1", path):
        if (candidate / "model.pt").is_file() and (candidate / "config.json").is_file():
            return candidate
    raise GroupRobustError(f"--from {path}: no model.pt (and config.json) there or in {path / 'stage1'}; "
                           "reuse a run trained by `grouprobust train` that saved its model")


def stage1_config(config: RunConfig) -> RunConfig:
    """The ERM config of stage 1: the pipeline's training parameters, no group labels, last epoch kept."""
    from grouprobust.hparams import param_space
    from grouprobust.methods.registry import get_method

    erm = get_method("erm")
    space = param_space(erm, str(config.hparams["loss"]))
    hparams = {k: v for k, v in config.hparams.items() if k in space}
    hparams["eval_every"] = int(hparams["epochs"])  # evaluate only the last epoch: ERM to the end, no early stopping
    return RunConfig(config.dataset, "erm", config.seed, dict(config.data), hparams, "none", "val_worst_class_acc")


def train_stage1(config: RunConfig, out: Path, device: torch.device,
                 on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train stage 1 into run directory ``out`` (with ``holdout.json``); returns its result."""
    from grouprobust.data.registry import load_dataset
    from grouprobust.train import run

    splits = load_dataset(config.dataset, config.seed, **config.data)
    remaining, heldout = holdout_split(len(splits.train), float(config.hparams["holdout_frac"]),
                                       int(config.hparams["split_seed"]))
    splits.train = splits.train.subset(remaining)
    result = run(stage1_config(config), out, splits=splits, device=device, on_epoch=on_epoch)
    write_json_atomic(out / HOLDOUT_FILE, {"fraction": float(config.hparams["holdout_frac"]),
                                           "split_seed": int(config.hparams["split_seed"]),
                                           "n_train": len(remaining) + len(heldout), "heldout": heldout})
    return result


def stage1_heldout(stage1_dir: Path, n_train: int, fraction: float, split_seed: int) -> tuple[np.ndarray, bool]:
    """``(heldout_index, seen_by_stage1)`` for a stage-1 run directory.

    A run trained by this protocol lists its held-out indices in ``holdout.json``. Any other run
    (plain ERM on all of train) gets the seeded split, flagged as seen: its model trained on them.
    """
    path = stage1_dir / HOLDOUT_FILE
    if path.is_file():
        info = read_json(path)
        if int(info["n_train"]) != n_train:
            raise GroupRobustError(f"{path} lists a training split of {info['n_train']} samples but the dataset has "
                                   f"{n_train}; the stage-1 run belongs to other data, train stage 1 again")
        return np.asarray(info["heldout"], dtype=np.int64), False
    return holdout_split(n_train, fraction, split_seed)[1], True


# -- stage 2 ---------------------------------------------------------------------------------------------

class Stage2Data:
    """Frozen features of the held-out set (labels only), the two validation halves and the test split.

    The held-out set's true groups are kept apart in ``heldout_groups`` for reporting (weight mass per
    group, the largest/smallest-weighted samples); they are never passed to an estimator.
    """

    def __init__(self, heldout: GroupDataset, target: GroupDataset, validation: GroupDataset, test: GroupDataset):
        self.heldout_groups = heldout.g
        self.heldout = heldout.without_groups()
        self.target, self.validation, self.test = target, validation, test


def metrics_of(estimator: Any, ds: GroupDataset, train_group_counts: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics ``M`` (accuracy, precision/F1, AUROC, calibration; see `grouprobust.metrics`) of a fitted head."""
    return dataset_metrics(ds, np.asarray(estimator.predict_proba(ds.x), dtype=np.float64), train_group_counts)


COMMON_PARAMS: dict[str, Param] = {
    "holdout_frac": Param(0.1, None, "fraction of train held out of stage 1 (the samples GSR reweights)"),
    "split_seed": Param(1, None, "seed of the held-out split (the GSR paper fixes numpy seed 1)"),
    "stage1": Param("", None, "stage-1 run directory to reuse (set by --from); empty: train stage 1"),
    "standardize": Param(True, None, "standardise features with the stage-2 training set's mean and std"),
}


class LastLayerPipeline:
    """Stage 1 (or a reused stage-1 run), feature extraction, then `fit_stage2` of the subclass."""

    name: ClassVar[str] = ""
    needs: ClassVar[str] = "val"
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    #: the estimators select by worst-group accuracy on the validation half; other rules are refused
    select: ClassVar[str] = "val_worst_group_acc"

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        """Fit the head; returns ``(estimator, info)`` where ``info`` holds ``selected`` and extras."""
        raise NotImplementedError

    @classmethod
    def run(cls, config: RunConfig, out: Path | None = None, device: torch.device | None = None,
            on_epoch: Callable[[int, float], None] | None = None, splits: Any = None) -> dict[str, Any]:
        """Run both stages and write the run directory at ``out``; returns the result dict."""
        if splits is not None:
            raise GroupRobustError(f"method {cls.name!r} builds its data from the dataset config; call it without splits")
        if config.select != cls.select:
            raise GroupRobustError(f"method {cls.name!r} selects by {cls.select} (on the validation half); "
                                   f"--select {config.select} is not supported, drop --select")
        stage1_from = str(config.hparams.get("stage1") or "")
        from_dir = resolve_stage1_dir(stage1_from) if stage1_from else None
        if from_dir is not None:
            check_same_data(from_dir, config)
        if out is None:
            with tempfile.TemporaryDirectory() as tmp:
                return cls._run(config, Path(tmp) / "run", device, on_epoch, from_dir)
        return cls._run(config, Path(out), device, on_epoch, from_dir)

    @classmethod
    def _run(cls, config: RunConfig, out: Path, device: torch.device | None,
             on_epoch: Callable[[int, float], None] | None, from_dir: Path | None) -> dict[str, Any]:
        from grouprobust.data.features import extract_features

        writer = RunDirectory(out, config.to_dict())
        stored = writer.reusable_result()
        if stored is not None:
            return stored
        start = time.perf_counter()
        with writer.writing():
            if from_dir is None:
                stage1_dir = writer.file("stage1")
                stage1_result = train_stage1(config, stage1_dir, device, on_epoch)
            else:
                stage1_dir = from_dir
                stage1_result = read_json(from_dir / "result.json") if (from_dir / "result.json").is_file() else {}
            feats, cache_info = extract_features(stage1_dir, device=device)
            heldout_idx, seen = stage1_heldout(stage1_dir, len(feats.train), float(config.hparams["holdout_frac"]),
                                               int(config.hparams["split_seed"]))
            halves = ValHalves(feats.val, config.seed)
            data = Stage2Data(feats.train.subset(heldout_idx, split="heldout"), halves.take("target"),
                              halves.take("validation"), feats.test)
            estimator, info = cls.fit_stage2(config.hparams, data, config.seed, writer.log)
            train_counts = feats.train.group_counts() if feats.train.has_groups else None
            result = {
                "dataset": config.dataset, "method": config.method, "seed": config.seed, "regime": config.regime,
                "selected": {"rule": cls.select, "oracle": False, **info.pop("selected")},
                "metrics": {split: metrics_of(estimator, ds, train_counts) for split, ds in
                            (("val", data.validation), ("test", data.test), ("target", data.target))},
                "train_group_counts": (np.bincount(data.heldout_groups, minlength=feats.train.n_groups).tolist()
                                       if data.heldout_groups is not None else None),
                "stage1": {"run_dir": str(from_dir) if from_dir else "stage1", "heldout_seen_by_stage1": seen,
                           "metrics": stage1_result.get("metrics")},
                "features": {"cache_key": cache_info["key"], "dim": int(feats.train.x.shape[1])},
                "val_halves": {"seed": config.seed, "target_n": len(data.target), "validation_n": len(data.validation)},
                "n_heldout": len(heldout_idx),
                "method_info": info,
                "hparams": config.hparams,
                "run_id": config.run_id,
            }
            weights = getattr(estimator, "weights_", None)
            if weights is not None:
                result["weights"] = weight_report(estimator, data, heldout_idx, writer.file(WEIGHTS_FILE))
            result["time_s"] = time.perf_counter() - start
            writer.finish(result)
        return result


def check_same_data(stage1_dir: Path, config: RunConfig) -> None:
    """Refuse a stage-1 run trained on another dataset (or other dataset options) than ``config``."""
    other = RunConfig.from_dict(read_json(stage1_dir / "config.json"))
    if other.dataset != config.dataset or other.data != config.data:
        raise GroupRobustError(f"--from {stage1_dir} was trained on dataset {other.dataset!r} with options {other.data} "
                               f"but this run asks for {config.dataset!r} with {config.data}; pass the same --dataset/--data")


def weight_report(estimator: Any, data: Stage2Data, heldout_idx: np.ndarray, path: Path, top: int = 10) -> dict[str, Any]:
    """Save the weights to ``path`` and list the largest/smallest-weighted held-out samples.

    ``path`` (npz) holds ``trajectory`` (snapshots x n), ``steps`` (their outer steps), ``final`` (the
    selected step's weights), ``heldout_index`` (index in the training split), ``y`` and ``g``.

    Samples are given by their index in the training split, class label, group (for reporting only;
    GSR never saw it) and final weight (the weights sum to 1).
    """
    w = np.asarray(estimator.weights_, dtype=np.float64)
    np.savez(path, trajectory=np.asarray(estimator.weight_trajectory_, dtype=np.float64),
             steps=np.asarray(estimator.trajectory_steps_), final=w, heldout_index=heldout_idx, y=data.heldout.y,
             g=data.heldout_groups if data.heldout_groups is not None else np.full(len(w), -1))
    order = np.argsort(-w, kind="stable")

    def row(i: int) -> dict[str, Any]:
        g = None if data.heldout_groups is None else int(data.heldout_groups[i])
        return {"index": int(heldout_idx[i]), "label": int(data.heldout.y[i]), "group": g, "weight": float(w[i])}

    report: dict[str, Any] = {"file": WEIGHTS_FILE, "largest": [row(i) for i in order[:top]],
                              "smallest": [row(i) for i in order[::-1][:top]]}
    if data.heldout_groups is not None:
        n_groups = int(data.heldout_groups.max()) + 1
        report["mass_per_group"] = np.bincount(data.heldout_groups, weights=w, minlength=n_groups).tolist()
    return report


def stage1_option(method: str, from_dir: Path) -> str:
    """The ``stage1`` hyper-parameter for ``--from DIR``: DIR's stage-1 run, checked now (one-line errors)."""
    from grouprobust.methods.registry import get_pipeline

    if get_pipeline(method) is None:
        raise GroupRobustError(f"--from reuses a stage-1 model and works only with a last-layer method "
                               f"(gsr, gsr-hf, dfr), not {method!r}; drop --from")
    return str(resolve_stage1_dir(from_dir).resolve())
