"""The ``grouprobust features`` command: a benchmark's images or texts → a feature directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from grouprobust.cli import DataOpt, app, console, err_console
from grouprobust.errors import GroupRobustError


@app.command()
def features(
    dataset: str = typer.Option(..., "--dataset", "-d", help="benchmark name (docs/datasets.md)"),
    root: Path = typer.Option(..., "--root", help="folder of your copy of the benchmark"),
    backbone: str = typer.Option(..., "--backbone", "-b",
                                 help="torchvision model (resnet50 ...), all-MiniLM-L6-v2, st:NAME, a transformers "
                                      "name (bert-base-uncased), or the baselines pixels / hashing"),
    out: Path = typer.Option(..., "--out", "-o", help="feature directory to write"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="local weights: a state-dict file or model directory"),
    data: List[str] = DataOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="inputs per forward pass"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA when present)"),
    download: bool = typer.Option(False, "--download", help="allow fetching the backbone's weights into its cache"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Extract backbone features of a benchmark into a directory that `train` and the last-layer methods read."""
    from grouprobust.data.encoders import load_encoder
    from grouprobust.data.extract import extract_features, write_features
    from grouprobust.data.readers import read_benchmark
    from grouprobust.models import pick_device
    from grouprobust.options import parse_assignments

    if (out / "meta.json").exists():
        raise GroupRobustError(f"{out} already holds a feature set; delete it or choose another --out")
    if batch_size is not None and batch_size < 1:
        raise GroupRobustError("--batch-size must be at least 1")
    table = read_benchmark(dataset, root, **parse_assignments(data, "--data"))
    dev = pick_device(device)
    encoder = load_encoder(backbone, table.input_kind, weights, dev, download)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=quiet) as progress:
        task = progress.add_task(f"{backbone} on {dataset} ({dev})", total=len(table.table))
        feats = extract_features(table, encoder, batch_size,
                                 progress=lambda done, total: progress.update(task, completed=done))
    write_features(table, feats, out, {"backbone": backbone, "weights": str(weights) if weights else None,
                                       "root": str(root), "options": parse_assignments(data, "--data")})
    console.print(f"{len(feats)} x {feats.shape[1]} features of {dataset} written to [bold]{out}[/bold]; train on them "
                  f"with `grouprobust train --dataset {dataset} --data features={out} ...`")
