"""``grouprobust features``: a benchmark's images or texts -> a feature directory, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grouprobust.cli.application import command_group, console, err_console
from grouprobust.cli.options import DataOpt, ThreadsOpt, parse_assignments
from grouprobust.cli.progress import count_progress
from grouprobust.data.extract import extract_benchmark_features, extract_embedded_features, is_embedded
from grouprobust.errors import GroupRobustError
from grouprobust.threads import apply_thread_policy

commands = command_group()


@commands.command()
def features(
    dataset: str = typer.Option(..., "--dataset", "-d", help="benchmark name (docs/datasets.md), or an embedded "
                                                             "dataset with texts or images (toxic-templates ...)"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder of your copy of the benchmark (benchmarks only)"),
    backbone: str = typer.Option(..., "--backbone", "-b",
                                 help="torchvision model (resnet50 ...), timm:NAME, package.module:callable (returns "
                                      "an nn.Module), a TorchScript file, all-MiniLM-L6-v2, st:NAME, a transformers "
                                      "name (bert-base-uncased), or the baselines pixels / hashing"),
    out: Path = typer.Option(..., "--out", "-o", help="feature directory to write"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="local weights: a state-dict file or model directory"),
    data: List[str] = DataOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="inputs per forward pass"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA when present)"),
    download: bool = typer.Option(False, "--download", help="allow fetching the backbone's weights into its cache"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    layer: Optional[str] = typer.Option(None, "--layer", help="image backbones: module to read, by its name in "
                                        "model.named_modules() (default: the penultimate layer)"),
    force: bool = typer.Option(False, "--force", help="replace the feature files (train/val/test.npz, meta.json) in OUT"),
    threads: Optional[int] = ThreadsOpt,
    amp: bool = typer.Option(False, "--amp", help="mixed precision for the backbone (for GPUs)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="image files: processes that load and transform "
                                          "them for the backbone (default: from the usable CPUs, at most 8; 0: "
                                          "in this process)"),
) -> None:
    """Extract backbone features of a benchmark into a directory that `train` and the last-layer methods read."""

    apply_thread_policy(threads)

    options = parse_assignments(data, "--data")
    embedded = is_embedded(dataset)
    if root is None and not embedded:
        raise GroupRobustError(f"benchmark {dataset!r} is read from your copy: give --root PATH (embedded datasets "
                               "such as toxic-templates need none)")
    notes: list[str] = []
    with count_progress(f"{backbone} on {dataset}", err_console, disable=quiet) as progress:
        common = dict(weights=weights, options=options, batch_size=batch_size, device=device, download=download,
                      progress=progress, layer=layer, notes=notes.append, force=force, amp=amp,
                      workers=workers)
        feats = (extract_embedded_features(dataset, backbone, out, **common) if embedded
                 else extract_benchmark_features(dataset, root, backbone, out, **common))
    for note in notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    how = f"--dataset features --data path={out}" if embedded else f"--dataset {dataset} --data features={out}"
    console.print(f"{len(feats)} x {feats.shape[1]} {'train ' if embedded else ''}features of {dataset} written to "
                  f"[bold]{out}[/bold]; train on them with `grouprobust train {how} ...`")
