"""The two-stage last-layer protocol of GSR, used by every `TwoStageMethod` (``gsr``, ``gsr-hf``, ``dfr``).

Stage 1 is an ordinary run (`grouprobust.runs.run`): ERM through the one loop on a seeded
``1 - holdout_frac`` of the training split, without group labels, for all its epochs (no early
stopping: only the last epoch is evaluated, so it is the one kept). The other ``holdout_frac`` is the
held-out set, never seen by stage 1; its indices are written to ``stage1/holdout.json``.

Stage 2 reads the stage-1 run back (`grouprobust.trained.load_trained_run`), freezes its feature
extractor (features cached by `TrainedRun.features`) and fits the method's last-layer estimator.
Group labels come only from the validation split, cut into two disjoint seeded halves
(`ValHalves`): the *target* half drives the method and the *validation* half selects the model.

* ``gsr`` / ``gsr-hf``: `grouprobust.lastlayer.GSR` learns a weight for each held-out sample (no
  group labels on them) so that the head trained on the weighted held-out set does well on every
  target group; the outer step is selected by worst-group accuracy on the validation half.
* ``dfr``: `grouprobust.lastlayer.DFR` retrains the head on group-balanced subsets of the *target*
  half (DFR trains on group-labelled validation data, as in its paper) and picks its regularisation on
  the validation half. The held-out training samples are not used.
* ``crt`` / ``reweight-crt`` / ``vanilla-crt``: `grouprobust.lastlayer.ClassifierRetraining` refits the
  head on the held-out samples (labels only) with class-balanced draws, class-balanced weights or
  neither; ``C`` is chosen on the validation half.

Reported ``val`` metrics are on the validation half (never trained on); ``test`` on the full test
split; ``target`` on the target half.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from grouprobust.config import RunConfig, param_space
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.registry import load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods.base import Stage2Data, TwoStageMethod
from grouprobust.methods.registry import get_method, list_methods
from grouprobust.metrics import dataset_metrics
from grouprobust.output import read_json, save_npz_atomic, write_json_atomic
from grouprobust.result import RunResult
from grouprobust.trained import MODEL_FILE, TrainedRun

HOLDOUT_FILE = "holdout.json"
WEIGHTS_FILE = "weights.npz"
STAGE1_DIR = "stage1"


# -- data splits -----------------------------------------------------------------------------------------

def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(remaining, heldout)``: sorted indices of a seeded random ``fraction`` of ``range(n)`` held out."""
    if not 0.0 < fraction < 1.0:
        raise GroupRobustError(f"holdout_frac must lie strictly between 0 and 1, got {fraction}; for example 0.1",
                               subject="hparam:holdout_frac")
    n_heldout = int(round(fraction * n))
    if n_heldout < 2 or n - n_heldout < 2:
        raise GroupRobustError(f"holdout_frac={fraction} of {n} training samples leaves too few on one side; "
                               "change holdout_frac", subject="hparam:holdout_frac")
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
                                   "(use the label regime 'val' or 'full' and a dataset with attributes)",
                                   subject="regime")
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
    """The stage-1 run directory for a given path: the path itself, or PATH/stage1 for a two-stage run.

    Raises a one-line error (subject ``stage1``) when the path does not exist or holds no model.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        what = "a file, not a run directory" if path.is_file() else "no such directory"
        raise GroupRobustError(f"stage-1 run {path}: {what}; pass the output directory of a finished "
                               "training run", subject="stage1")
    for candidate in (path / STAGE1_DIR, path):
        if (candidate / MODEL_FILE).is_file() and (candidate / "config.json").is_file():
            return candidate
    raise GroupRobustError(f"stage-1 run {path}: no {MODEL_FILE} (and config.json) there or in {path / STAGE1_DIR}; "
                           "reuse a run trained by grouprobust that saved its model", subject="stage1")


def stage1_option(method: str, path: str | Path) -> str:
    """The ``stage1`` hyper-parameter value for reusing the run at ``path``: its stage-1 run, checked now."""
    if not issubclass(get_method(method), TwoStageMethod):
        two_stage = ", ".join(m["name"] for m in list_methods() if m["kind"] == TwoStageMethod.kind)
        raise GroupRobustError(f"reusing a stage-1 model works only with a last-layer method ({two_stage}), "
                               f"not {method!r}", subject="stage1")
    return str(resolve_stage1_dir(path).resolve())


def stage1_config(config: RunConfig) -> RunConfig:
    """The ERM config of stage 1: the method's training parameters, no group labels, last epoch kept."""
    space = param_space(get_method("erm"), config.hparams["loss"])
    hparams = {k: v for k, v in config.hparams.items() if k in space}
    hparams["eval_every"] = hparams["epochs"]  # evaluate only the last epoch: ERM to the end, no early stopping
    return RunConfig(config.dataset, "erm", config.seed, dict(config.data), hparams, "none", "val_worst_class_acc",
                     config.dataset_inputs())  # stage 1 has none of the file-valued hyper-parameters


@dataclass
class Stage1Plan:
    """What stage 1 trains on: its config, the splits (train cut to the remaining samples) and the
    held-out indices written next to it."""

    config: RunConfig
    splits: DatasetSplits
    holdout: dict[str, Any]

    def write_holdout(self, stage1_dir: Path) -> None:
        """Record the held-out indices in ``stage1_dir/holdout.json``."""
        write_json_atomic(Path(stage1_dir) / HOLDOUT_FILE, self.holdout)


def plan_stage1(config: RunConfig) -> Stage1Plan:
    """The stage-1 run of a two-stage ``config``: ERM on the training samples that are not held out."""
    splits = load_dataset(config.dataset, config.seed, **config.data)
    fraction, split_seed = config.hparams["holdout_frac"], config.hparams["split_seed"]
    remaining, heldout = holdout_split(len(splits.train), fraction, split_seed)
    splits.train = splits.train.subset(remaining)
    return Stage1Plan(stage1_config(config), splits, {"fraction": fraction, "split_seed": split_seed,
                                                      "n_train": len(remaining) + len(heldout), "heldout": heldout})


def stage1_heldout(stage1_dir: Path, n_train: int, fraction: float, split_seed: int) -> tuple[np.ndarray, bool]:
    """``(heldout_index, seen_by_stage1)`` for a stage-1 run directory.

    A run trained by this protocol lists its held-out indices in ``holdout.json``. Any other run
    (plain ERM on all of train) gets the seeded split, flagged as seen: its model trained on them.
    """
    path = Path(stage1_dir) / HOLDOUT_FILE
    if path.is_file():
        info = read_json(path)
        if int(info["n_train"]) != n_train:
            raise GroupRobustError(f"{path} lists a training split of {info['n_train']} samples but the dataset has "
                                   f"{n_train}; the stage-1 run belongs to other data, train stage 1 again",
                                   subject="stage1")
        return np.asarray(info["heldout"], dtype=np.int64), False
    return holdout_split(n_train, fraction, split_seed)[1], True


def check_same_data(stage1: TrainedRun, config: RunConfig) -> None:
    """Refuse a stage-1 run trained on another dataset (or other dataset options) than ``config``."""
    other = stage1.config
    if other.dataset != config.dataset or other.data != config.data:
        raise GroupRobustError(f"stage-1 run {stage1.path} was trained on dataset {other.dataset!r} with options "
                               f"{other.data} but this run asks for {config.dataset!r} with {config.data}; use the "
                               "same dataset and options", subject="stage1")


# -- stage 2 ---------------------------------------------------------------------------------------------

def metrics_of(estimator: Any, ds: GroupDataset, train_group_counts: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics ``M`` (accuracy, precision/F1, AUROC, calibration; see `grouprobust.metrics`) of a fitted head."""
    return dataset_metrics(ds, np.asarray(estimator.predict_proba(ds.x), dtype=np.float64), train_group_counts)


def fit_stage2(config: RunConfig, stage1: TrainedRun, log: Callable[[dict[str, Any]], None], weights_path: Path,
               reused_stage1: bool) -> RunResult:
    """Stage 2 of ``config`` on the trained ``stage1`` run: features, held-out set, validation halves, the
    method's estimator, and the run's `RunResult` (weights saved to ``weights_path`` when the estimator
    learns sample weights)."""
    start = time.perf_counter()
    method_cls = get_method(config.method)
    hp = config.hparams
    if reused_stage1:
        check_same_data(stage1, config)
    feats, cache_info = stage1.features()
    heldout_idx, seen = stage1_heldout(stage1.path, len(feats.train), hp["holdout_frac"], hp["split_seed"])
    halves = ValHalves(feats.val, config.seed)
    head = stage1.model.head
    base_head = (head.weight.detach().cpu().double().numpy(), head.bias.detach().cpu().double().numpy())
    data = Stage2Data(feats.train.subset(heldout_idx, split="heldout"), halves.take("target"),
                      halves.take("validation"), feats.test, base_head)
    estimator, info = method_cls.fit_stage2(hp, data, config.seed, log)
    train_counts = feats.train.group_counts() if feats.train.has_groups else None
    extra: dict[str, Any] = {
        "stage1": {"run_dir": str(stage1.path) if reused_stage1 else STAGE1_DIR, "heldout_seen_by_stage1": seen,
                   "metrics": (stage1.result or {}).get("metrics")},
        "features": {"cache_key": cache_info["key"], "dim": int(feats.train.x.shape[1])},
        "val_halves": {"seed": config.seed, "target_n": len(data.target), "validation_n": len(data.validation)},
        "n_heldout": len(heldout_idx),
    }
    if getattr(estimator, "weights_", None) is not None:
        extra["weights"] = weight_report(estimator, data, heldout_idx, weights_path)
    return RunResult.of(
        config,
        selected={"rule": method_cls.select, "oracle": False, **info.pop("selected")},
        metrics={split: metrics_of(estimator, ds, train_counts) for split, ds in
                 (("val", data.validation), ("test", data.test), ("target", data.target))},
        train_group_counts=(np.bincount(data.heldout_groups, minlength=feats.train.n_groups).tolist()
                            if data.heldout_groups is not None else None),
        method_info=info,
        extra=extra,
        time_s=time.perf_counter() - start,
    )


def weight_report(estimator: Any, data: Stage2Data, heldout_idx: np.ndarray, path: Path, top: int = 10) -> dict[str, Any]:
    """Save the weights to ``path`` and list the largest/smallest-weighted held-out samples.

    ``path`` (npz) holds ``trajectory`` (snapshots x n), ``steps`` (their outer steps), ``final`` (the
    selected step's weights), ``heldout_index`` (index in the training split), ``y`` and ``g``.

    Samples are given by their index in the training split, class label, group (for reporting only;
    GSR never saw it) and final weight (the weights sum to 1).
    """
    w = np.asarray(estimator.weights_, dtype=np.float64)
    # estimators that learn weights over steps (GSR) keep a trajectory; others (AFR) only the final weights
    trajectory = getattr(estimator, "weight_trajectory_", w[None])
    steps = getattr(estimator, "trajectory_steps_", np.zeros(1, dtype=np.int64))
    save_npz_atomic(path, trajectory=np.asarray(trajectory, dtype=np.float64),
                    steps=np.asarray(steps), final=w, heldout_index=heldout_idx,
                    y=data.heldout.y, g=data.heldout_groups if data.heldout_groups is not None else np.full(len(w), -1))
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
