"""Rich tables: run results, comparisons, the catalogs (datasets, methods, selection rules), benchmark checks."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from grouprobust.selection import DEFAULT_RULE, LABEL_KINDS


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _pct_ci(value: float | None, interval: list[float] | None) -> str:
    """``72.4 [65.0, 78.8]``: a percentage with its 95% interval when there is one."""
    if value is None or not interval:
        return _pct(value)
    return f"{_pct(value)} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def selected_text(selected: dict[str, Any]) -> str:
    """``selected epoch 3 by RULE`` for a loop run; a two-stage run names what its estimator chose instead
    (``selected step 12`` for GSR, ``selected C 0.3`` for DFR), never ``epoch None``."""
    chosen = {k: v for k, v in selected.items() if k not in ("rule", "oracle", "epoch") and v is not None}
    parts = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.items()]
    if selected.get("epoch") is not None and "step" not in chosen:
        parts.insert(0, f"epoch {selected['epoch']}")
    return "selected " + (", ".join(parts) + " " if parts else "") + f"by {selected['rule']}"


def _fit_counts(result: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """The per-group count column: (header, group -> count, caption). A loop run counts its training split;
    a two-stage run counts the split its stage-2 head was fitted on (held-out part of train or target half
    of val), not the training split of stage 1."""
    train_counts = result.get("train_group_counts") or []
    by_index = {str(i): n for i, n in enumerate(train_counts)}
    if "n_heldout" not in result:
        return "train n", by_index, None
    fit_on = (result.get("method_info") or {}).get("fit_on")
    halves = result.get("val_halves") or {}
    fitted = {"target": "the target half of val", "heldout": "the held-out part of train"}.get(fit_on, "stage-2 data")
    caption = (f"two-stage: head fitted on {fitted}; {result['n_heldout']} training samples held out from stage 1; "
               f"val = the validation half of val ({halves.get('validation_n', '—')} samples, "
               f"target half {halves.get('target_n', '—')})")
    if fit_on == "target":
        target = (result["metrics"].get("target") or {}).get("per_group") or {}
        return "fit n (target)", {g: v.get("n") for g, v in target.items()}, caption
    return "fit n (held-out)", by_index, caption


def per_group_table(result: dict[str, Any], max_rows: int = 12) -> Table:
    """Per-group validation and test accuracy (%) and counts at the selected point (epoch, step or C)."""
    val, test = result["metrics"]["val"], result["metrics"]["test"]
    sel = result["selected"]
    title = f"{result['dataset']} · {result['method']} · seed {result['seed']} · {selected_text(sel)}"
    table = Table(title=title + (" [ORACLE]" if sel.get("oracle") else ""))
    count_header, fit_counts, caption = _fit_counts(result)
    for col, justify in (("group", "left"), (count_header, "right"), ("val n", "right"), ("val acc %", "right"),
                         ("test n", "right"), ("test acc % [95% CI]", "right")):
        table.add_column(col, justify=justify)
    test_groups = test.get("per_group") or {}
    val_groups = val.get("per_group") or {}
    rows = sorted(test_groups, key=lambda g: (test_groups[g]["acc"] is None, test_groups[g]["acc"] or 0.0))
    for g in rows[:max_rows]:
        tg, vg = test_groups[g], val_groups.get(g, {})
        n_fit = fit_counts.get(str(g))
        table.add_row(tg["name"], "—" if n_fit is None else str(n_fit), str(vg.get("n", "—")), _pct(vg.get("acc")),
                      str(tg["n"]), _pct_ci(tg["acc"], tg.get("ci95")))
    notes = [caption] if caption else []
    if any("ci95" in tg for tg in test_groups.values()):
        notes.append("95% CI: Wilson score interval")
    if len(rows) > max_rows:
        notes.append(f"{len(rows) - max_rows} more groups not shown (worst {max_rows} by test accuracy listed)")
    if notes:
        table.caption = "\n".join(notes)
    return table


def summary_table(result: dict[str, Any]) -> Table:
    """Worst-group, group-balanced, average and worst-class accuracy (%) on val and test."""
    table = Table(title="summary (accuracy %)")
    table.add_column("split")
    for col in ("worst-group", "group-balanced", "average", "worst-class"):
        table.add_column(col, justify="right")
    for split in ("val", "test"):
        m = result["metrics"][split]
        table.add_row(split, _pct_ci(m.get("worst_group_acc"), m.get("worst_group_acc_ci95")), _pct(m.get("group_balanced_acc")), _pct(m.get("avg_acc")),
                      _pct(m.get("worst_class_acc")))
    return table


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    """Print the per-group table and the summary."""
    console = console or Console()
    console.print(per_group_table(result))
    console.print(summary_table(result))
    for note in result.get("notes") or []:
        console.print(f"note: {note}", markup=False, highlight=False)
    for warning in result.get("warnings") or []:
        console.print(f"warning: {warning}", markup=False, highlight=False, style="yellow")


def comparison_table(results: dict[str, dict[str, Any]]) -> Table:
    """Test accuracies (%) of several runs side by side, one row per run label."""
    table = Table(title="test accuracy % at each run's selected epoch")
    table.add_column("method")
    for col in ("worst-group", "group-balanced", "average"):
        table.add_column(col, justify="right")
    for label, result in results.items():
        m = result["metrics"]["test"]
        table.add_row(label, _pct(m.get("worst_group_acc")), _pct(m.get("group_balanced_acc")), _pct(m.get("avg_acc")))
    return table


def datasets_table(rows: Iterable[dict[str, Any]]) -> Table:
    """One row per dataset: ``name``, ``description``, ``sizes`` (train/val/test or None) and ``groups`` text."""
    table = Table(title="datasets")
    table.add_column("name", no_wrap=True)
    for col in ("description", "train", "val", "test", "groups (non-empty train/val/test)"):
        table.add_column(col, overflow="fold")
    for row in rows:
        sizes = [str(n) for n in row["sizes"]] if row["sizes"] is not None else ["—"] * 3
        table.add_row(row["name"], row["description"], *sizes, row["groups"])
    return table


NEEDS_TEXT = {"none": "none", "val": "validation only", "full": "train + validation"}
#: What each level of ``needs`` means a method reads, for `grouprobust methods NAME`.
LABELS_READ = {"none": "none: no group labels anywhere (selection falls back to a label-free rule when the regime "
                       "gives none)",
               "val": "validation group labels only, for model selection (and, two-stage methods, to fit or tune "
                      "the last layer); never training group labels",
               "full": "training group labels (its objective or sampler uses them; or inferred groups from "
                       "--groups) and validation group labels for model selection"}


def methods_table(rows: Iterable[dict[str, Any]]) -> Table:
    """The rows of `grouprobust.methods.list_methods`: name, kind (loop or two-stage), the group labels each
    needs, what it does and the other libraries' names for it."""
    table = Table(title="methods")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("group labels needed")
    table.add_column("what it does", overflow="fold")
    table.add_column("same as", overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["kind"], NEEDS_TEXT[row["needs"]], row["summary"], row.get("same_as") or "—")
    return table


def param_text(name: str, param: Any) -> str:
    """One line for a `grouprobust.params.Param`: ``name = default``, its constraint, its search range and help."""
    parts = [f"{name} = {param.default!r}"]
    if param.constraint is not None:
        parts.append(param.constraint.describe(name))
    if param.search is not None:
        kind, *args = param.search
        parts.append(f"search {kind}({', '.join(map(str, args[0] if kind == 'choice' else args))})")
    return "; ".join(parts) + (f": {param.help}" if param.help else "")


def _search_text(param: Any) -> str:
    if param.search is None:
        return "fixed"
    kind, *args = param.search
    return f"{kind}({', '.join(map(str, args[0] if kind == 'choice' else args))})"


def params_table(title: str, sections: Iterable[tuple[str, dict[str, Any]]]) -> Table:
    """Parameters as rows: name, type, default, search range, constraint, help, and where each comes from.

    ``sections`` are ``(source, {name: Param})`` pairs (e.g. ``("method", cls.params)``); a name declared in
    an earlier section is not repeated by a later one (a method's redeclaration wins over the training default).
    """
    table = Table(title=title)
    for col in ("parameter", "type", "default", "search range", "constraint", "from", "help"):
        table.add_column(col, overflow="fold", no_wrap=col == "parameter")
    seen: set[str] = set()
    for source, params in sections:
        for name, param in params.items():
            if name in seen:
                continue
            seen.add(name)
            kind = getattr(param.kind, "__name__", "any")
            constraint = "—" if param.constraint is None else param.constraint.describe(name)
            table.add_row(name, kind, repr(param.default), _search_text(param), constraint, source, param.help or "—")
    return table


def losses_table(specs: Iterable[Any], shared: dict[str, Any]) -> Table:
    """One row per `grouprobust.losses.LossSpec`: name, what it computes, its own parameters (default,
    constraint, search range); the ``shared`` parameters every loss takes are left out of the rows."""
    table = Table(title="losses (--set loss=NAME; every loss also takes the class-weight parameters below)")
    table.add_column("name", no_wrap=True)
    table.add_column("what it computes", overflow="fold")
    table.add_column("parameters", overflow="fold")
    for spec in specs:
        own = [param_text(k, p) for k, p in spec.params.items() if k not in shared]
        table.add_row(spec.name, spec.description, "\n".join(own) or "—")
    return table


def shared_loss_params_table(shared: dict[str, Any]) -> Table:
    """The parameters every loss takes (per-class reweighting), one row each."""
    table = Table(title="parameters of every loss (per-class weights on the per-example loss)")
    table.add_column("parameter", overflow="fold")
    for name, param in shared.items():
        table.add_row(param_text(name, param))
    return table


def selection_rules_table(rules: Iterable[dict[str, Any]]) -> Table:
    """The rows of `grouprobust.selection.list_rules`; oracle rules in red."""
    table = Table(title="model-selection rules (ORACLE rules read the test split: never report them as a result)")
    for col in ("name", "split", "figure (best = max unless noted)", "labels needed", "what it picks", "reproduces"):
        table.add_column(col, overflow="fold")
    for rule in rules:
        name = rule["name"] + (" (default)" if rule["name"] == DEFAULT_RULE else "")
        style = "bold red" if rule["oracle"] else None
        metric = rule["metric"] + ("" if rule["direction"] == "max" else " (best = min)")
        table.add_row(name, rule["split"] + (" [ORACLE]" if rule["oracle"] else ""), metric,
                      LABEL_KINDS[rule["needs"]], rule["description"], rule["source"] or "—", style=style)
    return table


def group_count_tables(check: Any) -> list[Table]:
    """The group counts of a `grouprobust.data.readers.BenchmarkCheck`: training groups, evaluation groups."""
    out = []
    titles = {"groups": f"{check.name}: groups (class, attribute) per split",
              "eval_groups": f"{check.name}: evaluation groups (overlapping) per split"}
    for key, counts in (("groups", check.group_counts), ("eval_groups", check.eval_group_counts)):
        if counts is None:
            continue
        t = Table(title=titles[key])
        t.add_column("group")
        for split in check.splits:
            t.add_column(split, justify="right")
        for name, row in counts.iterrows():
            t.add_row(str(name), *(str(int(row[s])) for s in check.splits))
        t.add_row("[bold]samples[/bold]", *(str(check.samples[s]) for s in check.splits))
        out.append(t)
    return out


def inference_quality_table(quality: dict[str, Any]) -> Table:
    """Recovery of the true training groups by inferred ones (`grouprobust.group_inference.inference_quality`)."""
    table = Table(title=f"inferred vs true groups (reporting only): adjusted Rand index "
                        f"{quality['adjusted_rand_index']:.3f}, worst-group recall {_pct(quality['worst_group_recall'])}%")
    for col, justify in (("true group", "left"), ("n", "right"), ("precision %", "right"), ("recall %", "right")):
        table.add_column(col, justify=justify)
    for entry in quality["per_group"].values():
        table.add_row(entry["name"], str(entry["n"]), _pct(entry["precision"]), _pct(entry["recall"]))
    return table
