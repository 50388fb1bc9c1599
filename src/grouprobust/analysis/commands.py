"""``grouprobust analyze alignment|completeness|implicit-bias``: each writes a directory of CSV, markdown and PNG."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console

from grouprobust.cli import app
from grouprobust.errors import GroupRobustError

analyze_app = typer.Typer(no_args_is_help=True, help="Mechanism analyses: head alignment and strong convexity, "
                          "completeness of representations, implicit bias of reweighting.")
app.add_typer(analyze_app, name="analyze")
console = Console()

SEEDS_HELP = "comma-separated seeds (each seed redraws the embedded data and the initialisation)"


def parse_list(text: str, kind: type, option: str) -> list[Any]:
    """Comma-separated values of type ``kind``; a one-line error names the option and the fix."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise GroupRobustError(f"{option} is empty; give comma-separated values, e.g. {option} 0,1")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise GroupRobustError(f"{option} {text!r} is not a comma-separated list of {kind.__name__} values") from None


def _sets(sets: list[str], data: list[str]) -> tuple[dict, dict]:
    from grouprobust.options import parse_assignments

    return parse_assignments(sets, "--set"), parse_assignments(data, "--data")


def _check_out(out: Path) -> None:
    """Fail before any work when ``out`` cannot become the output directory."""
    if out.exists() and not out.is_dir():
        raise GroupRobustError(f"--out {out} is a file; give a directory path")


def _check_hparams(methods: list[str], hparams: dict) -> None:
    """Fail before any training when a method is unknown or a hyper-parameter is not one of its own."""
    from grouprobust.config import resolve_hparams
    from grouprobust.methods.registry import get_method

    for m in methods:
        resolve_hparams(get_method(m), hparams)


def _load_splits(dataset: str, seed: int, data: dict, features: Optional[Path]):
    from grouprobust.data import load_dataset
    from grouprobust.data.feature_store import load_feature_splits

    return load_feature_splits(features) if features is not None else load_dataset(dataset, seed, **data)


@analyze_app.command("alignment")
def alignment(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    dataset: str = typer.Option("spurious-gaussian", "--dataset", "-d", help="embedded dataset (ignored with --features)"),
    features: Optional[Path] = typer.Option(None, "--features", help="feature directory to use instead of --dataset"),
    encoder: str = typer.Option("none", "--encoder", help="none: the dataset's raw inputs; erm: model.features of "
                                "an ERM model trained end to end first"),
    methods: str = typer.Option("erm,groupdro", "--methods", help="comma-separated methods (erm required)"),
    l2: str = typer.Option("0,0.001,0.01,0.1,1", "--l2", help="comma-separated L2 strengths (weight_decay)"),
    seeds: str = typer.Option("0", "--seeds", help=SEEDS_HELP),
    sets: List[str] = typer.Option([], "--set", help="head training hyper-parameter key=value (repeatable)"),
    data: List[str] = typer.Option([], "--data", help="dataset option key=value (repeatable)"),
) -> None:
    """Head-only fine-tuning: cosine with spurious/oracle heads, strong convexity and the gap bound over L2."""
    import pandas as pd

    _check_out(out)
    from grouprobust.analysis.alignment import HEAD_DEFAULTS, alignment_sweep
    from grouprobust.analysis.plots import plot_alignment
    from grouprobust.analysis.output_dir import AnalysisDirectory, mean_std_table, summarize
    from grouprobust.analysis.training import embed_splits, train_model
    from grouprobust.data.registry import get_dataset_entry
    from grouprobust.methods.registry import get_method

    method_list, l2_list, seed_list = parse_list(methods, str, "--methods"), parse_list(l2, float, "--l2"), \
        parse_list(seeds, int, "--seeds")
    for m in method_list:
        get_method(m)
    if any(v < 0 for v in l2_list):
        raise GroupRobustError("--l2 values must be >= 0")
    if encoder not in ("none", "erm"):
        raise GroupRobustError(f"unknown --encoder {encoder!r}; use none or erm")
    hparams, data_opts = _sets(sets, data)
    if str(hparams.get("loss", "ce")) != "ce":
        raise GroupRobustError("alignment heads are cross-entropy heads (the convexity analysis assumes it); "
                               "drop --set loss=...")
    _check_hparams(method_list, {**HEAD_DEFAULTS, **hparams})
    if features is None:
        get_dataset_entry(dataset)
    frames = []
    for seed in seed_list:
        splits = _load_splits(dataset, seed, data_opts, features)
        if encoder == "erm":
            defaults = get_dataset_entry(dataset).train_defaults if features is None else {}
            model, _ = train_model(splits, "erm", seed, {k: v for k, v in defaults.items() if k != "select"})
            splits = embed_splits(model, splits)
        console.print(f"seed {seed}: training {len(method_list) * len(l2_list) + 2} heads")
        frames.append(alignment_sweep(splits, method_list, l2_list, seed, {**HEAD_DEFAULTS, **hparams}))
    df = pd.concat(frames, ignore_index=True)
    cos_cols = [c for c in df.columns if c.startswith("cos_") and c != "cos_heads"]
    metric_cols = cos_cols + ["test_worst_group_acc", "test_avg_acc", "train_worst_group_loss", "wga_gain",
                              "loss_gap", "bound", "mu", "dist"]
    summary = summarize(df, ["l2", "method"], metric_cols)
    result = AnalysisDirectory(out)
    result.table(df, "alignment_runs", "Every head (one row per seed, L2 and method)",
                 in_report=False)
    result.table(summary, "alignment_summary", "Mean and standard deviation over seeds", in_report=False)
    shown = ["cos_spurious", "cos_oracle", "test_worst_group_acc", "loss_gap", "bound", "mu"]
    table = mean_std_table(summary, ["l2", "method"], shown)
    result.table(table, "alignment_table", "Headline (mean ± std over seeds)")
    result.figure(plot_alignment(summary), "alignment")
    source = str(features) if features is not None else f"{dataset} ({encoder} encoder)"
    result.finish("Alignment, strong convexity and the worst-group gap", _ALIGNMENT_NOTES.format(source=source),
                  {"dataset": dataset, "features": str(features) if features else None, "encoder": encoder,
                   "methods": method_list, "l2": l2_list, "seeds": seed_list, "head_hparams": {**HEAD_DEFAULTS,
                                                                                                **hparams}})
    print(table.to_string(index=False))
    console.print(f"wrote {out}")


_ALIGNMENT_NOTES = """
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


@analyze_app.command("completeness")
def completeness(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    dataset: str = typer.Option("spurious-gaussian", "--dataset", "-d", help="embedded dataset"),
    methods: str = typer.Option("erm,groupdro", "--methods", help="comma-separated end-to-end methods"),
    seeds: str = typer.Option("0", "--seeds", help=SEEDS_HELP),
    split: str = typer.Option("test", "--split", help="split whose representation is scored"),
    sets: List[str] = typer.Option([], "--set", help="training hyper-parameter key=value for every method"),
    data: List[str] = typer.Option([], "--data", help="dataset option key=value (repeatable)"),
) -> None:
    """DCI disentanglement, completeness and informativeness of end-to-end representations."""
    import pandas as pd

    _check_out(out)
    from grouprobust.analysis.completeness import completeness_runs
    from grouprobust.analysis.plots import plot_completeness
    from grouprobust.analysis.output_dir import AnalysisDirectory, mean_std_table, summarize
    from grouprobust.data.registry import get_dataset_entry
    from grouprobust.methods.registry import get_method

    method_list, seed_list = parse_list(methods, str, "--methods"), parse_list(seeds, int, "--seeds")
    for m in method_list:
        get_method(m)
    if split not in ("train", "val", "test"):
        raise GroupRobustError(f"unknown --split {split!r}; use train, val or test")
    hparams, data_opts = _sets(sets, data)
    defaults = {k: v for k, v in get_dataset_entry(dataset).train_defaults.items() if k != "select"}
    _check_hparams(method_list, {**defaults, **hparams})
    frames = []
    for seed in seed_list:
        splits = _load_splits(dataset, seed, data_opts, None)
        console.print(f"seed {seed}: training {', '.join(method_list)}")
        frames.append(completeness_runs(splits, method_list, seed, {**defaults, **hparams}, split))
    df = pd.concat(frames, ignore_index=True)
    cols = ["completeness_label", "completeness_attribute", "completeness_mean", "disentanglement",
            "informativeness_label", "informativeness_attribute", "test_worst_group_acc", "test_avg_acc"]
    summary = summarize(df, ["method"], cols)
    table = mean_std_table(summary, ["method"], cols)
    result = AnalysisDirectory(out)
    result.table(df, "completeness_runs", "Every model (one row per seed and method)",
                 in_report=False)
    result.table(summary, "completeness_summary", "Mean and standard deviation over seeds")
    result.table(table, "completeness_table", "Headline (mean ± std over seeds)")
    result.figure(plot_completeness(summary), "completeness")
    result.finish("Completeness of representations (DCI)", _COMPLETENESS_NOTES.format(dataset=dataset, split=split),
                  {"dataset": dataset, "data": data_opts, "methods": method_list, "seeds": seed_list,
                   "hparams": {**defaults, **hparams}, "split": split})
    print(table.to_string(index=False))
    console.print(f"wrote {out}")


_COMPLETENESS_NOTES = """
Dataset: {dataset}. Each method is trained end to end; its representation is `model.features` on
the {split} split. For each factor (label, attribute) a random forest (50 trees, depth 6, every dimension considered at each split) predicts
the factor from the representation on 70% of the rows; its impurity importances form one column of
the importance matrix and its accuracy on the other 30% is the informativeness. Completeness of a
factor = 1 − entropy of its importances over code dimensions (base = number of dimensions): lower
means the factor is spread over more dimensions. Disentanglement = importance-weighted mean over
dimensions of 1 − entropy over factors (Eastwood & Williams, 2018).
"""


@analyze_app.command("implicit-bias")
def implicit_bias(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    losses: str = typer.Option("squared,ce,poly-tailed", "--losses", help="comma-separated losses (grouprobust.losses)"),
    l2: str = typer.Option("0,0.1", "--l2", help="comma-separated L2 strengths"),
    steps: int = typer.Option(20000, "--steps", help="full-batch gradient-descent steps"),
    lr: float = typer.Option(0.05, "--lr", help="gradient-descent step size"),
    group_lr: float = typer.Option(0.01, "--group-lr", help="GroupDRO's step size on the group weights"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated seeds (each draws other digit images)"),
) -> None:
    """The GRW paper's 6-image experiment: distance of IW and GroupDRO weights from ERM's over training."""
    import pandas as pd

    _check_out(out)
    from grouprobust.analysis.implicit_bias import ImplicitBiasSetting, run_implicit_bias
    from grouprobust.analysis.plots import plot_implicit_bias
    from grouprobust.analysis.output_dir import AnalysisDirectory, mean_std_table, summarize

    settings = [ImplicitBiasSetting(loss=loss, l2=lam, steps=steps, lr=lr, group_lr=group_lr, seed=seed)
                for seed in parse_list(seeds, int, "--seeds") for loss in parse_list(losses, str, "--losses")
                for lam in parse_list(l2, float, "--l2")]
    for s in settings:
        s.check()
    frames = []
    for s in settings:
        console.print(f"seed {s.seed}: loss {s.loss}, l2 {s.l2}")
        frames.append(run_implicit_bias(s))
    curves = pd.concat(frames, ignore_index=True)
    final = curves[curves["step"] == steps]
    cols = ["rel_dist", "dir_dist", "erm_train_loss", "train_loss", "erm_norm"]
    summary = summarize(final, ["loss", "l2", "method"], cols)
    table = mean_std_table(summary, ["loss", "l2", "method"], ["rel_dist", "dir_dist", "erm_train_loss"], digits=4)
    result = AnalysisDirectory(out)
    result.table(curves, "implicit_bias_curves", "Distances over training (every logged step, seed, loss, L2)",
                 in_report=False)
    result.table(summary, "implicit_bias_summary", f"At the last step ({steps}): mean and std over seeds",
                 in_report=False)
    result.table(table, "implicit_bias_table", "Headline (mean ± std over seeds)")
    result.figure(plot_implicit_bias(curves), "implicit_bias")
    result.finish("Implicit bias of reweighting (six digit images)", _IMPLICIT_NOTES,
                  {"settings": [asdict(s) for s in settings]})
    print(table.to_string(index=False))
    console.print(f"wrote {out}")


_IMPLICIT_NOTES = """
Five images of digit 0 and one of digit 1 from scikit-learn's digits (pixels / 16), a bias-free
linear model with two outputs started at zero, full-batch gradient descent. ERM weights each image
1/6, importance weighting (iw) each digit 1/2 in total, GroupDRO updates group weights
q_g ∝ q_g·exp(group_lr·L_g) every step. `rel_dist` = ||W − W_erm|| / ||W_erm||; `dir_dist` =
||W/||W|| − W_erm/||W_erm|||| (distance of the normalised weights). Losses come from
`grouprobust.losses` (squared: logits against one-hot targets; ce: logistic; poly-tailed: Wang et al.).
"""
