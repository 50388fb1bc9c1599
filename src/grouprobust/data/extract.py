"""Feature extraction for a benchmark table: encode every row with a backbone, write a feature directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from grouprobust.data.encoders import Encoder
from grouprobust.data.feature_store import save_feature_splits
from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.errors import GroupRobustError

Progress = Callable[[int, int], None]


def table_inputs(table: BenchmarkTable) -> list[Any]:
    """What the encoder reads per row: image paths, texts, or pre-tokenised inputs (MultiNLI's cache)."""
    if table.input_kind == "image":
        return table.table["path"].tolist()
    if "text" in table.table.columns:
        return table.table["text"].tolist()
    from grouprobust.data.readers.multinli import load_cached_bert_inputs

    arrays = load_cached_bert_inputs(Path(table.meta["root"]))
    if len(arrays["labels"]) != len(table.table) or not np.array_equal(arrays["labels"], table.table["y"].to_numpy()):
        raise GroupRobustError(f"{table.source}: the cached BERT inputs do not line up with the metadata rows "
                               "(different count or labels); regenerate them with group DRO's scripts")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return [{k: arrays[k][i] for k in keys} for i in range(len(table.table))]


def extract_features(table: BenchmarkTable, encoder: Encoder, batch_size: int | None = None,
                     progress: Progress | None = None) -> np.ndarray:
    """``(n_rows, dim)`` float32 features of every table row, in table order; ``progress(done, total)`` per batch."""
    if encoder.kind != table.input_kind:
        raise GroupRobustError(f"backbone {encoder.name!r} encodes {encoder.kind}s but {table.name} has "
                               f"{table.input_kind}s; choose a {table.input_kind} backbone")
    inputs = table_inputs(table)
    size = batch_size or encoder.batch_size
    chunks = []
    for start in range(0, len(inputs), size):
        chunks.append(np.asarray(encoder.encode(inputs[start:start + size]), dtype=np.float32).reshape(
            min(size, len(inputs) - start), -1))
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
