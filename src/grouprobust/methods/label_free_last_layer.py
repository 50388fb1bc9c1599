"""``afr`` and ``self``: two-stage methods that retrain the last layer without training group labels.

Same protocol as ``gsr`` and ``dfr`` (`grouprobust.two_stage`: the same held-out split and validation
halves), so all four are compared on identical stage-1 features. The estimators
(`grouprobust.lastlayer.AFR`, `grouprobust.lastlayer.SELF`) retrain the stage-1 head on the held-out
samples (class labels only); the validation half (group-labelled) chooses their hyper-parameters;
the target half is not used by them.
"""

from __future__ import annotations

from typing import Any, Callable

from grouprobust.errors import GroupRobustError
from grouprobust.lastlayer import AFR, SELF
from grouprobust.methods.base import Stage2Data, TwoStageMethod
from grouprobust.methods.last_layer import estimator_params
from grouprobust.methods.registry import register_method


def _base_head(data: Stage2Data, name: str):
    if data.base_head is None:
        raise GroupRobustError(f"{name} starts from the stage-1 model's head, which this stage-1 run does not provide")
    return data.base_head


def _fit(est: Any, data: Stage2Data, name: str) -> Any:
    coef, intercept = _base_head(data, name)
    return est.fit(data.heldout.x, data.heldout.y, init_coef=coef, init_intercept=intercept,
                   X_val=data.validation.x, y_val=data.validation.y, groups_val=data.validation.g)


@register_method
class AFRMethod(TwoStageMethod):
    name = "afr"
    summary = ("AFR: retrain the ERM head on the held-out split with weights exp(-gamma p_true), class-balanced, "
               "regularised towards the ERM head; gamma and reg chosen on the validation half")
    same_as = "AFR (Qiu et al. 2023)"
    params = estimator_params(AFR, {
        "gammas": (None, "weight sharpness values tried (weights exp(-gamma * p_true))"),
        "regs": (None, "strengths of the pull towards the ERM head tried"),
        "penalty": (("choice", ["l2", "l1"]), "distance to the ERM head: l2 (squared, as in the paper) or l1"),
    })

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        est = _fit(AFR(gammas=tuple(hp["gammas"]), regs=tuple(hp["regs"]), penalty=hp["penalty"],
                       random_state=seed), data, cls.name)
        for (gamma, reg), score in est.cv_scores_.items():
            log({"gamma": gamma, "reg": reg, "val_worst_group_acc": score})
        return est, {"selected": {"epoch": None, "gamma": est.gamma_, "reg": est.reg_},
                     "cv_scores": {f"gamma={g},reg={r}": v for (g, r), v in est.cv_scores_.items()}}


@register_method
class SELFMethod(TwoStageMethod):
    name = "self"
    summary = ("SELF: retrain the head class-balanced on held-out samples where the ERM head and an early-stopped "
               "head disagree (no group labels; validation half picks the L2 strength)")
    same_as = "SELF (LaBonte et al. 2024), early-stop disagreement with an early-stopped last layer"
    params = estimator_params(SELF, {
        "early_steps": (("int", 5, 50), "gradient steps of the early-stopped head"),
        "early_lr": (None, "step size of the early-stopped head"),
        "min_size": (None, "smallest retraining set (topped up with the least confident samples)"),
        "l2s": (None, "L2 strengths tried for the retrained head"),
    })

    @classmethod
    def fit_stage2(cls, hp: dict[str, Any], data: Stage2Data, seed: int,
                   log: Callable[[dict[str, Any]], None]) -> tuple[Any, dict[str, Any]]:
        est = _fit(SELF(early_steps=hp["early_steps"], early_lr=hp["early_lr"], min_size=hp["min_size"],
                        l2s=tuple(hp["l2s"]), random_state=seed), data, cls.name)
        for l2, score in est.cv_scores_.items():
            log({"l2": l2, "val_worst_group_acc": score})
        info: dict[str, Any] = {"selected": {"epoch": None, "l2": est.l2_}, "n_retrain": int(len(est.selected_)),
                                "n_disagree": int(est.n_disagree_)}
        if data.heldout_groups is not None:  # reporting only: SELF never saw these
            info["retrain_group_counts"] = [int((data.heldout_groups[est.selected_] == g).sum())
                                            for g in range(data.validation.n_groups)]
        return est, info
