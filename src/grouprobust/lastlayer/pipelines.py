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
        "clip": (None, "gradient clipping of the outer step (see GSR)"),
        "step_decay": (None, "outer step-size decay (see GSR)"),
    })}


class _GSRBase(LastLayerPipeline):
    hessian = "exact"

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        from grouprobust.lastlayer import GSR

        est = GSR(hessian=cls.hessian, **{k: hp[k] for k in ("l2", "n_steps", "step_size", "tau", "clip", "step_decay")})
        est.fit(data.x(data.heldout), data.heldout.y,
                X_target=data.x(data.target), y_target=data.target.y, groups_target=data.target.g,
                X_val=data.x(data.validation), y_val=data.validation.y, groups_val=data.validation.g)
        trajectory = np.asarray(est.weight_trajectory_)
        for step, entry in enumerate(est.history_):
            line = dict(entry) if isinstance(entry, dict) else {"value": entry}
            line.setdefault("step", step)
            if data.heldout_groups is not None and step < len(trajectory):
                # reporting only: weight mass on each true group of the held-out set (GSR never sees these)
                line["weight_mass_per_group"] = np.bincount(data.heldout_groups, weights=trajectory[step]).tolist()
            log(line)
        return est, {"selected": {"epoch": int(est.best_step_), "step": int(est.best_step_)}, "hessian": cls.hessian,
                     "n_steps_run": len(est.history_)}


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

        est = DFR(penalty=hp["penalty"], Cs=hp["Cs"], n_subsamples=int(hp["n_subsamples"]), random_state=seed)
        est.fit(data.x(data.target), data.target.y, data.target.g,
                X_val=data.x(data.validation), y_val=data.validation.y, groups_val=data.validation.g)
        for entry in getattr(est, "history_", None) or getattr(est, "cv_results_", None) or []:
            log(dict(entry) if isinstance(entry, dict) else {"value": entry})
        chosen = getattr(est, "C_", None)
        return est, {"selected": {"epoch": None, "C": None if chosen is None else float(np.ravel(chosen)[0])}}
