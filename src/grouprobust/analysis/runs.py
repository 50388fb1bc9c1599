"""The three mechanism analyses end to end: seeds loop, training, and a written analysis directory.

Each function validates every argument before any work (a bad one raises `GroupRobustError`
with ``subject`` set to the argument's name and writes nothing), runs every seed, writes ``out``
(CSV tables, ``report.md``, a PNG figure, ``info.json``; see `AnalysisDirectory`) and returns the
headline table (mean ± std over seeds). ``progress(message, done, total)``, if given, is called as the
work advances: ``done`` of ``total`` units (heads or models trained; gradient steps for implicit bias),
``message`` what runs now, so a front end can draw a bar. ``hparams`` and ``data`` take typed values or
strings (coerced like any option). An ``out`` that already holds an analysis (``report.md`` or
``info.json``) is refused before any work unless ``force``; no file the analysis did not write itself
is replaced without it.

    >>> from grouprobust.analysis.runs import run_implicit_bias_experiment
    >>> table = run_implicit_bias_experiment("ib", losses=["ce"], l2=[0.0], steps=200)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from grouprobust.analysis.alignment import HEAD_DEFAULTS, alignment_sweep
from grouprobust.analysis.completeness import completeness_runs
from grouprobust.analysis.implicit_bias import ImplicitBiasSetting, run_implicit_bias
from grouprobust.analysis.plots import plot_alignment, plot_completeness, plot_implicit_bias
from grouprobust.config import check_seed, resolve_hparams
from grouprobust.analysis.output_dir import AnalysisDirectory, check_analysis_out, mean_std_table, summarize
from grouprobust.analysis.training import embed_splits, train_model
from grouprobust.data import load_dataset
from grouprobust.data.dataset import DatasetSplits
from grouprobust.data.feature_store import load_feature_splits
from grouprobust.data.registry import get_dataset_entry
from grouprobust.errors import GroupRobustError
from grouprobust.params import coerce, refuse_repeats
from grouprobust.methods.registry import get_method

Progress = Callable[[str, int, int], None]


def _nonempty(values: Iterable[Any], name: str) -> list[Any]:
    out = list(values)
    if not out:
        raise GroupRobustError(f"{name} is empty; give at least one value", subject=name)
    return out


def _once(values: list[Any], name: str, noun: str) -> list[Any]:
    """`refuse_repeats` for the option ``name`` (also the error's subject)."""
    return refuse_repeats(values, name, noun, subject=name)


def _check_out(out: Path, force: bool = False) -> None:
    """Fail before any work when ``out`` cannot become the output directory: a path under a file or in a
    folder that refuses new entries (`grouprobust.outdir.check_output_path`), or one holding an analysis (`check_analysis_out`)."""
    check_analysis_out(out, force)


def _check_methods(methods: list[str], hparams: dict[str, Any]) -> None:
    """Fail before any training when a method is unknown or a hyper-parameter is not one of its own."""
    for m in methods:
        get_method(m)
    for m in methods:
        resolve_hparams(get_method(m), hparams)


def _load_splits(dataset: str, seed: int, data: dict[str, Any], features: Path | None) -> DatasetSplits:
    return load_feature_splits(features) if features is not None else load_dataset(dataset, seed, **data)


class _Tracker:
    """Counts units of work done out of ``total`` and reports them to a `Progress` callback."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done, self.message = progress, total, 0, ""

    def say(self, message: str) -> None:
        self.message = message
        if self.progress is not None:
            self.progress(message, self.done, self.total)

    def advance(self, units: int = 1) -> None:
        self.done += units
        if self.progress is not None:
            self.progress(self.message, self.done, self.total)


def run_alignment(out: Path | str, *, dataset: str = "spurious-gaussian", features: Path | str | None = None,
                  encoder: str = "none", methods: Sequence[str] = ("erm", "groupdro"),
                  l2: Sequence[float] = (0.0, 0.001, 0.01, 0.1, 1.0), seeds: Sequence[int] = (0,),
                  hparams: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                  progress: Progress | None = None, force: bool = False) -> pd.DataFrame:
    """Head-only fine-tuning: cosine with spurious/oracle heads, strong convexity and the gap bound over L2.

    ``features``: a feature directory to use instead of ``dataset``; ``encoder``: ``"none"`` (the
    inputs as they are) or ``"erm"`` (``model.features`` of an ERM model trained end to end first);
    ``methods`` must include ``"erm"``; ``l2``: the weight decays of the heads; ``hparams``: head
    training hyper-parameters over `HEAD_DEFAULTS` (cross-entropy only); ``data``: dataset options.
    """
    out = Path(out)
    features = Path(features) if features is not None else None
    _check_out(out, force)
    method_list = _once(_nonempty(methods, "methods"), "methods", "method")
    l2_list = _once([float(v) for v in _nonempty(l2, "l2")], "l2", "strength")
    seed_list = _once([check_seed(s, "seeds") for s in _nonempty(seeds, "seeds")], "seeds", "seed")
    for m in method_list:
        get_method(m)
    if "erm" not in method_list:
        raise GroupRobustError("the alignment analysis compares methods with ERM; include erm in methods",
                               subject="methods")
    if any(v < 0 for v in l2_list):
        raise GroupRobustError("l2 values must be >= 0", subject="l2")
    if encoder not in ("none", "erm"):
        raise GroupRobustError(f"unknown encoder {encoder!r}; use none or erm", subject="encoder")
    hparams, data = dict(hparams or {}), dict(data or {})
    if str(hparams.get("loss", "ce")) != "ce":
        raise GroupRobustError("alignment heads are cross-entropy heads (the convexity analysis assumes it); "
                               "drop the hyper-parameter loss", subject="hparam:loss")
    head_hparams = {**HEAD_DEFAULTS, **hparams}
    _check_methods(method_list, head_hparams)
    if features is None:
        get_dataset_entry(dataset)
    frames = []
    per_seed = len(method_list) * len(l2_list) + 2 + (encoder == "erm")
    tracker = _Tracker(progress, per_seed * len(seed_list))
    for seed in seed_list:
        splits = _load_splits(dataset, seed, data, features)
        if encoder == "erm":
            tracker.say(f"seed {seed}: training the ERM encoder")
            defaults = get_dataset_entry(dataset).train_defaults if features is None else {}
            model, _ = train_model(splits, "erm", seed, {k: v for k, v in defaults.items() if k != "select"})
            splits = embed_splits(model, splits)
            tracker.advance()
        tracker.say(f"seed {seed}: training {len(method_list) * len(l2_list) + 2} heads")
        frames.append(alignment_sweep(splits, method_list, l2_list, seed, head_hparams, on_model=tracker.advance))
    df = pd.concat(frames, ignore_index=True)
    cos_cols = [c for c in df.columns if c.startswith("cos_") and c != "cos_heads"]
    metric_cols = cos_cols + ["test_worst_group_acc", "test_avg_acc", "train_worst_group_loss", "wga_gain",
                              "loss_gap", "bound", "mu", "dist"]
    summary = summarize(df, ["l2", "method"], metric_cols)
    with AnalysisDirectory(out, force=force) as result:
        result.table(df, "alignment_runs", "Every head (one row per seed, L2 and method)", in_report=False)
        result.table(summary, "alignment_summary", "Mean and standard deviation over seeds", in_report=False)
        shown = ["cos_spurious", "cos_oracle", "test_worst_group_acc", "loss_gap", "bound", "mu"]
        table = mean_std_table(summary, ["l2", "method"], shown)
        result.table(table, "alignment_table", "Headline (mean ± std over seeds)")
        result.figure(plot_alignment(summary), "alignment")
        source = str(features) if features is not None else f"{dataset} ({encoder} encoder)"
        result.finish("Alignment, strong convexity and the worst-group gap", ALIGNMENT_NOTES.format(source=source),
                      {"dataset": dataset, "features": str(features) if features else None, "encoder": encoder,
                       "methods": method_list, "l2": l2_list, "seeds": seed_list, "head_hparams": head_hparams})
    return table


ALIGNMENT_NOTES = """
Features: {source}. Each head is a linear layer trained with the project's loop (cross-entropy,
weight_decay = L2). `cos_spurious`: cosine with an ERM head trained on the training features whose
labels were replaced by the class each attribute value co-occurs with most (a head that predicts
through the attribute). `cos_oracle`: cosine with an ERM head trained on the validation features,
where the attribute is independent of the label. `cos_true_*`: cosine with the dataset's true
directions when known. Cosines compare class-centred weight matrices (bias excluded).
`loss_gap` = max_g F_g(ERM head) − max_g F_g(method head), F_g = group cross-entropy + L2/2·||θ||²
on the training set (nats); `bound` = ||∇F_g*(θ_ERM)||·d − μ/2·d², d² = r_E² + r_M² − 2 r_E r_M cos(θ_E, θ_M);
`mu` = smallest eigenvalue of the regularised Hessian of the worst group's loss on the centred
subspace along the segment between the heads. See `grouprobust.analysis.convexity`.
"""


def run_completeness(out: Path | str, *, dataset: str = "spurious-gaussian",
                     methods: Sequence[str] = ("erm", "groupdro"), seeds: Sequence[int] = (0,), split: str = "test",
                     hparams: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                     progress: Progress | None = None, force: bool = False) -> pd.DataFrame:
    """DCI disentanglement, completeness and informativeness of end-to-end representations.

    Every method is trained end to end on embedded ``dataset`` (its training defaults, overridden
    by ``hparams``); the representation ``model.features`` on ``split`` is scored.
    """
    out = Path(out)
    _check_out(out, force)
    method_list = _once(_nonempty(methods, "methods"), "methods", "method")
    seed_list = _once([check_seed(s, "seeds") for s in _nonempty(seeds, "seeds")], "seeds", "seed")
    for m in method_list:
        get_method(m)
    if split not in ("train", "val", "test"):
        raise GroupRobustError(f"unknown split {split!r}; use train, val or test", subject="split")
    hparams, data = dict(hparams or {}), dict(data or {})
    defaults = {k: v for k, v in get_dataset_entry(dataset).train_defaults.items() if k != "select"}
    train_hparams = {**defaults, **hparams}
    _check_methods(method_list, train_hparams)
    frames = []
    tracker = _Tracker(progress, len(method_list) * len(seed_list))
    for seed in seed_list:
        splits = _load_splits(dataset, seed, data, None)
        tracker.say(f"seed {seed}: training {', '.join(method_list)}")
        frames.append(completeness_runs(splits, method_list, seed, train_hparams, split, on_model=tracker.advance))
    df = pd.concat(frames, ignore_index=True)
    cols = ["completeness_label", "completeness_attribute", "completeness_mean", "disentanglement",
            "informativeness_label", "informativeness_attribute", "test_worst_group_acc", "test_avg_acc"]
    summary = summarize(df, ["method"], cols)
    table = mean_std_table(summary, ["method"], cols)
    with AnalysisDirectory(out, force=force) as result:
        result.table(df, "completeness_runs", "Every model (one row per seed and method)", in_report=False)
        result.table(summary, "completeness_summary", "Mean and standard deviation over seeds")
        result.table(table, "completeness_table", "Headline (mean ± std over seeds)")
        result.figure(plot_completeness(summary), "completeness")
        result.finish("Completeness of representations (DCI)", COMPLETENESS_NOTES.format(dataset=dataset, split=split),
                      {"dataset": dataset, "data": data, "methods": method_list, "seeds": seed_list,
                       "hparams": train_hparams, "split": split})
    return table


COMPLETENESS_NOTES = """
Dataset: {dataset}. Each method is trained end to end; its representation is `model.features` on
the {split} split. For each factor (label, attribute) a random forest (50 trees, depth 6, every dimension considered at each split) predicts
the factor from the representation on 70% of the rows; its impurity importances form one column of
the importance matrix and its accuracy on the other 30% is the informativeness. Completeness of a
factor = 1 − entropy of its importances over code dimensions (base = number of dimensions): lower
means the factor is spread over more dimensions. Disentanglement = importance-weighted mean over
dimensions of 1 − entropy over factors (Eastwood & Williams, 2018).
"""


def run_implicit_bias_experiment(out: Path | str, *, losses: Sequence[str] = ("squared", "ce", "poly-tailed"),
                                 l2: Sequence[float] = (0.0, 0.1), steps: int = 20000, lr: float = 0.05,
                                 group_lr: float = 0.01, seeds: Sequence[int] = (0,),
                                 progress: Progress | None = None, force: bool = False) -> pd.DataFrame:
    """The GRW paper's 6-image experiment: distance of IW and GroupDRO weights from ERM's over training.

    One full-batch gradient-descent run per (seed, loss, L2) for ``steps`` steps of size ``lr``
    (GroupDRO's group weights move with ``group_lr``); see `grouprobust.analysis.implicit_bias`.
    """
    out = Path(out)
    _check_out(out, force)
    seed_list = _once([check_seed(s, "seeds") for s in _nonempty(seeds, "seeds")], "seeds", "seed")
    loss_list = _once(_nonempty(losses, "losses"), "losses", "loss")
    l2_list = _once([float(v) for v in _nonempty(l2, "l2")], "l2", "strength")
    # coerced, so that steps=True is refused rather than read as one step
    steps, lr, group_lr = (coerce(steps, int, "steps", "option"), coerce(lr, float, "lr", "option"),
                           coerce(group_lr, float, "group_lr", "option"))
    settings = [ImplicitBiasSetting(loss=loss, l2=lam, steps=steps, lr=lr, group_lr=group_lr, seed=seed)
                for seed in seed_list for loss in loss_list for lam in l2_list]
    for s in settings:
        s.check()
    frames = []
    tracker = _Tracker(progress, sum(s.steps for s in settings))
    for s in settings:
        tracker.say(f"seed {s.seed}: loss {s.loss}, l2 {s.l2}")
        frames.append(run_implicit_bias(s, on_steps=tracker.advance))
    curves = pd.concat(frames, ignore_index=True)
    final = curves[curves["step"] == steps]
    cols = ["rel_dist", "dir_dist", "erm_train_loss", "train_loss", "erm_norm"]
    summary = summarize(final, ["loss", "l2", "method"], cols)
    table = mean_std_table(summary, ["loss", "l2", "method"], ["rel_dist", "dir_dist", "erm_train_loss"], digits=4)
    with AnalysisDirectory(out, force=force) as result:
        result.table(curves, "implicit_bias_curves", "Distances over training (every logged step, seed, loss, L2)",
                     in_report=False)
        result.table(summary, "implicit_bias_summary", f"At the last step ({steps}): mean and std over seeds",
                     in_report=False)
        result.table(table, "implicit_bias_table", "Headline (mean ± std over seeds)")
        result.figure(plot_implicit_bias(curves), "implicit_bias")
        result.finish("Implicit bias of reweighting (six digit images)", IMPLICIT_BIAS_NOTES,
                      {"settings": [asdict(s) for s in settings]})
    return table


IMPLICIT_BIAS_NOTES = """
Five images of digit 0 and one of digit 1 from scikit-learn's digits (pixels / 16), a bias-free
linear model with two outputs started at zero, full-batch gradient descent. ERM weights each image
1/6, importance weighting (iw) each digit 1/2 in total, GroupDRO updates group weights
q_g ∝ q_g·exp(group_lr·L_g) every step. `rel_dist` = ||W − W_erm|| / ||W_erm||; `dir_dist` =
||W/||W|| − W_erm/||W_erm|||| (distance of the normalised weights). Losses come from
`grouprobust.losses` (squared: logits against one-hot targets; ce: logistic; poly-tailed: Wang et al.).
"""
