"""Feature extraction for a benchmark table: encode every row with a backbone, write a feature directory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from grouprobust.data.encoders import Encoder, load_encoder
from grouprobust.data.feature_store import save_feature_splits
from grouprobust.data.readers import read_benchmark
from grouprobust.data.readers.multinli import load_cached_bert_inputs
from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.errors import GroupRobustError
from grouprobust.threads import apply_thread_policy

Progress = Callable[[int, int], None]


def table_inputs(table: BenchmarkTable) -> list[Any]:
    """What the encoder reads per row: image paths, texts, or pre-tokenised inputs (MultiNLI's cache)."""
    if table.input_kind == "image":
        return table.table["path"].tolist()
    if "text" in table.table.columns:
        return table.table["text"].tolist()
    arrays = load_cached_bert_inputs(Path(table.meta["root"]))
    if len(arrays["labels"]) != len(table.table) or not np.array_equal(arrays["labels"], table.table["y"].to_numpy()):
        raise GroupRobustError(f"{table.source}: the cached BERT inputs do not line up with the metadata rows "
                               "(different count or labels); regenerate them with group DRO's scripts")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return [{k: arrays[k][i] for k in keys} for i in range(len(table.table))]


def extract_features(table: BenchmarkTable, encoder: Encoder, batch_size: int | None = None,
                     progress: Progress | None = None, amp_device: Any = None) -> np.ndarray:
    """``(n_rows, dim)`` float32 features of every table row, in table order; ``progress(done, total)`` per batch.

    ``amp_device`` (a torch device) runs the backbone under ``torch.autocast`` in that device's reduced
    precision (`grouprobust.models.autocast_dtype`); the features are returned as float32 either way.
    """
    if encoder.kind != table.input_kind:
        raise GroupRobustError(f"backbone {encoder.name!r} encodes {encoder.kind}s but {table.name} has "
                               f"{table.input_kind}s; choose a {table.input_kind} backbone", subject="backbone")
    inputs = table_inputs(table)
    size = batch_size or encoder.batch_size
    chunks = []
    precision = contextlib.nullcontext()
    if amp_device is not None:
        import torch

        from grouprobust.models import autocast_dtype

        precision = torch.autocast(amp_device.type, dtype=autocast_dtype(amp_device))
    for start in range(0, len(inputs), size):
        with precision:
            encoded = encoder.encode(inputs[start:start + size])
        chunks.append(np.asarray(encoded, dtype=np.float32).reshape(min(size, len(inputs) - start), -1))
        if progress is not None:
            progress(min(start + size, len(inputs)), len(inputs))
    features = np.concatenate(chunks)
    if not np.all(np.isfinite(features)):
        raise GroupRobustError(f"backbone {encoder.name!r} produced NaN or inf features; check the weights")
    return features


def write_features(table: BenchmarkTable, features: np.ndarray, out: Path, source: dict[str, Any]) -> Path:
    """Save ``features`` of ``table`` as a feature directory (see `grouprobust.data.feature_store`)."""
    splits = table.to_splits(features)
    splits.name = table.name
    return save_feature_splits(splits, Path(out), source={"dataset": table.name, "table": str(table.source),
                                                           "n": len(table.table), **source})


def extract_benchmark_features(dataset: str, root: Path | str, backbone: str, out: Path | str,
                               weights: Path | str | None = None, options: dict[str, Any] | None = None,
                               batch_size: int | None = None, device: Any = None, download: bool = False,
                               progress: Progress | None = None, amp: bool = False) -> np.ndarray:
    """Read benchmark ``dataset`` under ``root``, encode every row with ``backbone``, write a feature directory.

    ``options`` are the benchmark reader's options; ``weights`` local backbone weights; ``download``
    allows fetching weights into the backbone's cache; ``device`` None picks CUDA when present.
    ``progress(done, total)`` is called after every batch; ``amp`` runs the backbone in mixed precision
    (on a GPU: float16 or bfloat16; on a CPU: bfloat16, which is rarely faster there). Refuses to
    replace an existing feature directory. Returns the ``(n_rows, dim)`` features.
    """
    out = Path(out)
    if (out / "meta.json").exists():
        raise GroupRobustError(f"{out} already holds a feature set; delete it or choose another output directory",
                               subject="out")
    if batch_size is not None and batch_size < 1:
        raise GroupRobustError(f"batch_size must be at least 1, got {batch_size}", subject="batch_size")
    apply_thread_policy()
    options = dict(options or {})
    table = read_benchmark(dataset, root, **options)
    encoder = load_encoder(backbone, table.input_kind, Path(weights) if weights is not None else None, device,
                           download)
    amp_device = None
    if amp:
        from grouprobust.models import pick_device

        amp_device = pick_device(device)
    features = extract_features(table, encoder, batch_size, progress=progress, amp_device=amp_device)
    write_features(table, features, out, {"backbone": backbone, "weights": str(weights) if weights else None,
                                          "root": str(root), "options": options})
    return features
