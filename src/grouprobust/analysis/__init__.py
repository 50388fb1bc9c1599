"""Mechanism analyses: head alignment and strong convexity, DCI completeness, the implicit bias of reweighting."""

from grouprobust.analysis.dci import DCIResult, completeness_per_factor, dci, disentanglement
from grouprobust.analysis.geometry import centered_weights, cosine
from grouprobust.analysis.implicit_bias import ImplicitBiasSetting, run_implicit_bias, six_digits

__all__ = ["DCIResult", "ImplicitBiasSetting", "centered_weights", "completeness_per_factor", "cosine", "dci",
           "disentanglement", "run_implicit_bias", "six_digits"]
