"""``gsr``, ``gsr-hf`` and ``dfr`` as pipelines of `grouprobust train` (see `grouprobust.lastlayer.protocol`).

Each declares its stage-2 hyper-parameters (defaults taken from the estimator itself, so they never
drift) next to the stage-1 training parameters; ``--set name=value`` sets either.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from grouprobust.hparams import Param
from grouprobust.lastlayer.protocol import COMMON_PARAMS, LastLayerPipeline, Stage2Data
from grouprobust.methods.registry import register_pipeline


def _estimator_params(cls: type, names: dict[str, tuple[tuple | None, str]]) -> dict[str, Param]:
    defaults = cls().get_params()
    return {name: Param(defaults[name], search, help) for name, (search, help) in names.items()}


def _gsr_params() -> dict[str, Param]:
    from grouprobust.lastlayer import GSR

    return {**COMMON_PARAMS, **_estimator_params(GSR, {
        "l2": (("log_uniform", 1e-4, 1.0), "L2 strength of the last layer (intercept not penalised)"),
        "n_steps": (None, "outer reweighting steps"),
        "step_size": (("log_uniform", 1e-2, 10.0), "outer learning rate of the sample weights"),
        "tau": (("log_uniform", 0.1, 10.0), "temperature of the adaptive group aggregation"),
        "clip": (None, "clip the outer gradient to this root-mean-square"),
        "step_decay": (None, "outer step size multiplied by this every decay_every steps"),
        "decay_every": (None, "outer steps between step-size decays"),
    })}


class _GSRBase(LastLayerPipeline):
    hessian = "exact"

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        from grouprobust.lastlayer import GSR

        names = ("l2", "n_steps", "step_size", "tau", "clip", "step_decay", "decay_every", "standardize")
        est = GSR(hessian=cls.hessian, random_state=seed, **{k: hp[k] for k in names})
        est.fit(data.heldout.x, data.heldout.y,
                X_target=data.target.x, y_target=data.target.y, groups_target=data.target.g,
                X_val=data.validation.x, y_val=data.validation.y, groups_val=data.validation.g)
        snapshot = {int(s): i for i, s in enumerate(est.trajectory_steps_)}
        for entry in est.history_:
            line = dict(entry)
            i = snapshot.get(int(entry["step"]))
            if i is not None and data.heldout_groups is not None:
                # reporting only: weight mass on each true held-out group (GSR never saw these labels)
                line["weight_mass_per_group"] = np.bincount(data.heldout_groups, weights=est.weight_trajectory_[i]).tolist()
            log(line)
        return est, {"selected": {"epoch": int(est.best_step_), "step": int(est.best_step_)}, "hessian": cls.hessian,
                     "n_steps_run": len(est.history_) - 1}


@register_pipeline
class GSRPipeline(_GSRBase):
    name = "gsr"
    summary = ("GSR: ERM on 90% of train, then learn weights of the held-out 10% by exact influence through "
               "a retrained last layer; target/validation halves of val")
    params = _gsr_params()


@register_pipeline
class GSRHFPipeline(_GSRBase):
    name = "gsr-hf"
    hessian = "free"
    summary = "GSR-HF: GSR with first-order (Hessian-free) influence, gradient inner products only"
    params = _gsr_params()


def _dfr_params() -> dict[str, Param]:
    from grouprobust.lastlayer import DFR

    return {**COMMON_PARAMS, **_estimator_params(DFR, {
        "penalty": (("choice", ["l1", "l2"]), "regulariser of the retrained head: l1 or l2"),
        "Cs": (None, "inverse regularisation strengths tried (chosen by validation worst-group accuracy)"),
        "n_subsamples": (None, "group-balanced subsets averaged"),
    })}


@register_pipeline
class DFRPipeline(LastLayerPipeline):
    name = "dfr"
    summary = ("DFR: ERM features, head retrained on group-balanced subsets of the target half of val, "
               "regularisation chosen on the other half")
    params = _dfr_params()

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        from grouprobust.lastlayer import DFR

        est = DFR(penalty=hp["penalty"], Cs=tuple(hp["Cs"]), n_subsamples=int(hp["n_subsamples"]),
                  standardize=bool(hp["standardize"]), random_state=seed)
        est.fit(data.target.x, data.target.y, data.target.g,
                X_val=data.validation.x, y_val=data.validation.y, groups_val=data.validation.g)
        for C, score in est.cv_scores_.items():
            log({"C": float(C), "val_worst_group_acc": float(score)})
        return est, {"selected": {"epoch": None, "C": float(est.C_)}, "cv_scores": {str(c): float(v) for c, v in est.cv_scores_.items()}}
