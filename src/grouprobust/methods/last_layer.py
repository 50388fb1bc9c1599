"""``gsr``, ``gsr-hf``, ``dfr`` and the classifier re-training family (``crt``, ``reweight-crt``,
``vanilla-crt``): two-stage methods (see `grouprobust.two_stage` for the protocol).

Each declares its stage-2 hyper-parameters with defaults and constraints taken from the estimator
itself (`grouprobust.lastlayer`), so they never drift; the stage-1 training parameters and the
protocol's own are added when a config is resolved.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from grouprobust.lastlayer import DFR, GSR, ClassifierRetraining
from grouprobust.methods.base import Stage2Data, TwoStageMethod
from grouprobust.methods.registry import register_method
from grouprobust.params import Param


def estimator_params(cls: type, names: dict[str, tuple[tuple | None, str]]) -> dict[str, Param]:
    """Params for the estimator's constructor arguments ``names`` (search range, help): defaults and
    constraints read off the estimator class."""
    defaults = cls().get_params()
    constraints = getattr(cls, "parameter_constraints", {})
    return {name: Param(defaults[name], search, help, constraints.get(name)) for name, (search, help) in names.items()}


GSR_PARAMS = estimator_params(GSR, {
    "l2": (("log_uniform", 1e-4, 1.0), "L2 strength of the last layer (intercept not penalised)"),
    "n_steps": (None, "outer reweighting steps"),
    "step_size": (("log_uniform", 1e-2, 10.0), "outer learning rate of the sample weights"),
    "tau": (("log_uniform", 0.1, 10.0), "temperature of the adaptive group aggregation"),
    "clip": (None, "clip the outer gradient to this root-mean-square"),
    "step_decay": (None, "outer step size multiplied by this every decay_every steps"),
    "decay_every": (None, "outer steps between step-size decays"),
})


class _GSRMethod(TwoStageMethod):
    hessian = "exact"
    params = GSR_PARAMS

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        est = GSR(hessian=cls.hessian, random_state=seed, standardize=hp["standardize"],
                  **{k: hp[k] for k in GSR_PARAMS})
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
        # fit_on: the split the stage-2 head is fitted on (what the CLI's per-group "fit n" column counts)
        return est, {"selected": {"epoch": int(est.best_step_), "step": int(est.best_step_)}, "hessian": cls.hessian,
                     "fit_on": "heldout",
                     "n_steps_run": len(est.history_) - 1}


@register_method
class GSRMethod(_GSRMethod):
    name = "gsr"
    summary = ("GSR: ERM on 90% of train, then learn weights of the held-out 10% by exact influence through "
               "a retrained last layer; target/validation halves of val")


@register_method
class GSRHFMethod(_GSRMethod):
    name = "gsr-hf"
    hessian = "free"
    summary = "GSR-HF: GSR with first-order (Hessian-free) influence, gradient inner products only"


DFR_PARAMS = estimator_params(DFR, {
    "penalty": (("choice", ["l1", "l2"]), "regulariser of the retrained head: l1 or l2"),
    "Cs": (None, "inverse regularisation strengths tried (chosen by validation worst-group accuracy)"),
    "n_subsamples": (None, "group-balanced subsets averaged"),
})


@register_method
class DFRMethod(TwoStageMethod):
    name = "dfr"
    summary = ("DFR: ERM features, head retrained on group-balanced subsets of the target half of val, "
               "regularisation chosen on the other half")
    same_as = "SubpopBench DFR, DFR (Kirichenko et al.)"
    params = DFR_PARAMS

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        est = DFR(penalty=hp["penalty"], Cs=tuple(hp["Cs"]), n_subsamples=hp["n_subsamples"],
                  standardize=hp["standardize"], random_state=seed)
        est.fit(data.target.x, data.target.y, data.target.g,
                X_val=data.validation.x, y_val=data.validation.y, groups_val=data.validation.g)
        for C, score in est.cv_scores_.items():
            log({"C": float(C), "val_worst_group_acc": float(score)})
        return est, {"selected": {"epoch": None, "C": float(est.C_)}, "fit_on": "target",
                     "cv_scores": {str(c): float(v) for c, v in est.cv_scores_.items()}}


CRT_PARAMS = estimator_params(ClassifierRetraining, {
    "Cs": (None, "inverse L2 strengths tried (chosen by worst-group accuracy on the validation half)"),
    "n_draws": (None, "crt: class-balanced draws, one head each, averaged"),
})


class _CRTMethod(TwoStageMethod):
    """Kang et al.'s classifier re-training: the head refit on the held-out samples' frozen features with
    class balancing (`grouprobust.lastlayer.ClassifierRetraining`); no group labels in the fit, the
    validation half chooses ``C``."""

    balance = "sample"
    params = CRT_PARAMS

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        est = ClassifierRetraining(balance=cls.balance, Cs=tuple(hp["Cs"]), n_draws=hp["n_draws"],
                                   standardize=hp["standardize"], random_state=seed)
        est.fit(data.heldout.x, data.heldout.y,
                X_val=data.validation.x, y_val=data.validation.y, groups_val=data.validation.g)
        for C, score in est.cv_scores_.items():
            log({"C": float(C), "val_worst_group_acc": float(score)})
        return est, {"selected": {"epoch": None, "C": float(est.C_)}, "balance": cls.balance,
                     "class_weight": [float(v) for v in est.class_weight_],
                     "cv_scores": {str(c): float(v) for c, v in est.cv_scores_.items()}}


@register_method
class CRTMethod(_CRTMethod):
    name = "crt"
    summary = ("cRT (Kang et al.): ERM features, head retrained on class-balanced draws of the held-out training "
               "samples (no group labels); C chosen on the validation half")
    same_as = "SubpopBench CRT"


@register_method
class ReWeightCRTMethod(_CRTMethod):
    name = "reweight-crt"
    balance = "reweight"
    summary = ("ReWeightCRT: head retrained on the held-out samples with class-balanced loss weights "
               "n / (k n_c); C chosen on the validation half")
    same_as = "SubpopBench ReWeightCRT"


@register_method
class VanillaCRTMethod(_CRTMethod):
    name = "vanilla-crt"
    balance = "none"
    summary = "VanillaCRT: head retrained on the held-out samples as they are (no balancing); C chosen on the validation half"
    same_as = "SubpopBench VanillaCRT"
