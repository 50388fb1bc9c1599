"""``grouprobust features``: a benchmark's images or texts -> a feature directory, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grouprobust.cli.application import app, console, err_console
from grouprobust.cli.options import DataOpt, ThreadsOpt, parse_assignments
from grouprobust.cli.progress import count_progress


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
    threads: Optional[int] = ThreadsOpt,
    amp: bool = typer.Option(False, "--amp", help="mixed precision for the backbone (for GPUs)"),
) -> None:
    """Extract backbone features of a benchmark into a directory that `train` and the last-layer methods read."""
    # Lazy: extraction imports pandas and the backbones torch, which `grouprobust --help` does not need.
    from grouprobust.data.extract import extract_benchmark_features
    from grouprobust.threads import apply_thread_policy

    apply_thread_policy(threads)

    options = parse_assignments(data, "--data")
    with count_progress(f"{backbone} on {dataset}", err_console, disable=quiet) as progress:
        feats = extract_benchmark_features(dataset, root, backbone, out, weights=weights, options=options,
                                           batch_size=batch_size, device=device, download=download,
                                           progress=progress, amp=amp)
    console.print(f"{len(feats)} x {feats.shape[1]} features of {dataset} written to [bold]{out}[/bold]; train on them "
                  f"with `grouprobust train --dataset {dataset} --data features={out} ...`")
