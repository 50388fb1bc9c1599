"""Feature extraction: encode every row of a benchmark table, or every sample of an embedded dataset
(its texts, ``meta["texts"]``, or its image arrays), with a backbone; write a feature directory."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Sequence

import numpy as np

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.encoders import Encoder, load_encoder
from grouprobust.data.feature_store import check_feature_target, save_feature_splits
from grouprobust.data.image_loader import check_workers
from grouprobust.data.registry import get_dataset_entry, load_dataset
from grouprobust.data.readers import read_benchmark
from grouprobust.data.readers.multinli import load_cached_bert_inputs
from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.errors import GroupRobustError
from grouprobust.models import autocast_dtype, pick_device
from grouprobust.threads import apply_thread_policy

Progress = Callable[[int, int], None]
Notes = Callable[[str], None]


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
                     progress: Progress | None = None, amp_device: Any = None,
                     workers: int | None = None) -> np.ndarray:
    """``(n_rows, dim)`` float32 features of every table row, in table order; ``progress(done, total)`` per batch.

    ``amp_device`` (a torch device) runs the backbone under ``torch.autocast`` in that device's reduced
    precision (`grouprobust.models.autocast_dtype`); the features are returned as float32 either way.
    ``workers``: processes loading image files (see `encode_inputs`).
    """
    if encoder.kind != table.input_kind:
        raise GroupRobustError(f"backbone {encoder.name!r} encodes {encoder.kind}s but {table.name} has "
                               f"{table.input_kind}s; choose a {table.input_kind} backbone", subject="backbone")
    return encode_inputs(table_inputs(table), encoder, batch_size, progress, amp_device=amp_device, workers=workers)


def encode_inputs(inputs: Sequence[Any], encoder: Encoder, batch_size: int | None = None,
                  progress: Progress | None = None, done: int = 0, total: int | None = None,
                  amp_device: Any = None, workers: int | None = None) -> np.ndarray:
    """``(len(inputs), dim)`` float32 features of ``inputs``, in order; ``progress(done + k, total)`` per batch;
    ``amp_device`` as in `extract_features`.

    Image paths go through the encoder's ``stream`` when it has one: one DataLoader for all of them,
    ``workers`` processes loading the files (None: chosen from the usable CPUs, see
    `grouprobust.data.image_loader.choose_workers`; 0: in this process). Other inputs, and encoders
    without a stream, are encoded ``batch_size`` at a time in this process.
    """
    check_workers(workers)
    total = len(inputs) if total is None else total
    size = batch_size or encoder.batch_size
    precision = _precision(amp_device)
    if encoder.stream is not None and _are_paths(inputs):
        batches = encoder.stream(inputs, size, workers, precision)
    else:
        batches = _encoded_chunks(inputs, encoder, size, precision)
    chunks, count = [], 0
    for encoded in batches:
        n = min(size, len(inputs) - count)
        chunks.append(np.asarray(encoded, dtype=np.float32).reshape(n, -1))
        count += n
        if progress is not None:
            progress(done + count, total)
    features = np.concatenate(chunks)
    if not np.all(np.isfinite(features)):
        raise GroupRobustError(f"backbone {encoder.name!r} produced NaN or inf features; check the weights")
    return features


def _precision(amp_device: Any) -> ContextManager[Any]:
    """``torch.autocast`` in ``amp_device``'s reduced precision, or a null context when it is None."""
    if amp_device is None:
        return contextlib.nullcontext()
    import torch  # only mixed precision needs torch here

    return torch.autocast(amp_device.type, dtype=autocast_dtype(amp_device))


def _are_paths(inputs: Sequence[Any]) -> bool:
    """Whether ``inputs`` are file paths (a table's images), not arrays, texts or token ids."""
    return len(inputs) > 0 and isinstance(inputs[0], (str, PathLike))


def _encoded_chunks(inputs: Sequence[Any], encoder: Encoder, size: int,
                    precision: ContextManager[Any]) -> Iterator[np.ndarray]:
    """``encoder.encode`` of ``inputs``, ``size`` at a time, each inside ``precision``."""
    for start in range(0, len(inputs), size):
        with precision:
            encoded = encoder.encode(inputs[start:start + size])
        yield encoded


def write_features(table: BenchmarkTable, features: np.ndarray, out: Path, source: dict[str, Any],
                   force: bool = False) -> Path:
    """Save ``features`` of ``table`` as a feature directory (see `grouprobust.data.feature_store`; ``force``
    replaces the feature files already there); returns the directory."""
    splits = table.to_splits(features)
    splits.name = table.name
    return save_feature_splits(splits, Path(out), source={"dataset": table.name, "table": str(table.source),
                                                           "n": len(table.table), **source}, force=force)


def embedded_inputs(ds: GroupDataset) -> tuple[str, list[Any]]:
    """``(kind, inputs)`` a backbone reads for one split of an embedded dataset: its texts, or its images
    (``(C, H, W)`` arrays)."""
    if ds.meta.get("texts") is not None:
        return "text", list(ds.meta["texts"])
    if ds.x.ndim == 4:
        return "image", list(ds.x)
    raise GroupRobustError(f"dataset {ds.name!r} holds feature vectors, neither texts nor images for a backbone; "
                           "train on it directly", subject="dataset")


def extract_embedded_features(dataset: str, backbone: str, out: Path | str, weights: Path | str | None = None,
                              options: dict[str, Any] | None = None, seed: int = 0, batch_size: int | None = None,
                              device: Any = None, download: bool = False, progress: Progress | None = None,
                              layer: str | None = None, notes: Notes | None = None, force: bool = False,
                              amp: bool = False, workers: int | None = None) -> np.ndarray:
    """Build embedded ``dataset`` (``options``, ``seed``), encode every split with ``backbone``, write a feature
    directory (train on it with dataset ``features``, option ``path``). Returns the ``(n_train, dim)``
    train features; the other arguments are as in `extract_benchmark_features` (``workers`` is checked but
    unused: an embedded dataset's images are arrays in memory)."""
    out = _check_out(out, batch_size, force, workers)
    options = dict(options or {})
    splits = load_dataset(dataset, seed, **options)
    parts = [embedded_inputs(ds) for ds in splits]
    encoder = load_encoder(backbone, parts[0][0], _path(weights), device, download, layer)
    if encoder.kind != parts[0][0]:
        raise GroupRobustError(f"backbone {encoder.name!r} encodes {encoder.kind}s but {dataset} has "
                               f"{parts[0][0]}s; choose a {parts[0][0]} backbone", subject="backbone")
    total, done, encoded = sum(len(p[1]) for p in parts), 0, []
    for ds, (_, inputs) in zip(splits, parts):
        feats = encode_inputs(inputs, encoder, batch_size, progress, done, total, _amp_device(amp, device))
        done += len(inputs)
        encoded.append(replace(ds, x=feats, meta={}, inputs="features"))
    _note(encoder, notes)
    featured = DatasetSplits(*encoded, name=splits.name, description=splits.description)
    save_feature_splits(featured, out, source={"dataset": dataset, "seed": seed, "options": options,
                                               "n": total, **_source(backbone, weights, encoder)}, force=force)
    return encoded[0].x


def _amp_device(amp: bool, device: Any) -> Any:
    """The torch device to autocast on when ``amp``, else None."""
    if not amp:
        return None
    return pick_device(device)


def _path(weights: Path | str | None) -> Path | None:
    return Path(weights) if weights is not None else None


def _check_out(out: Path | str, batch_size: int | None, force: bool, workers: int | None = None) -> Path:
    out = check_feature_target(Path(out), force)
    if batch_size is not None and batch_size < 1:
        raise GroupRobustError(f"batch_size must be at least 1, got {batch_size}", subject="batch_size")
    check_workers(workers)
    return out


def _source(backbone: str, weights: Path | str | None, encoder: Encoder) -> dict[str, Any]:
    return {"backbone": backbone, "weights": str(weights) if weights else None, **encoder.info}


def _note(encoder: Encoder, notes: Notes | None) -> None:
    """One line on how the weights were fitted, when anything was stripped or left out."""
    ignored, prefix = encoder.info.get("ignored_keys") or [], encoder.info.get("stripped_prefix")
    if notes is None or not (ignored or prefix):
        return
    parts = [f"stripped the prefix {prefix!r} from every key"] if prefix else []
    if ignored:
        shown = ", ".join(ignored[:4]) + (" ..." if len(ignored) > 4 else "")
        parts.append(f"ignored {len(ignored)} key(s) the backbone does not read ({shown}; listed in meta.json)")
    notes(f"weights: {'; '.join(parts)}")


def extract_benchmark_features(dataset: str, root: Path | str, backbone: str, out: Path | str,
                               weights: Path | str | None = None, options: dict[str, Any] | None = None,
                               batch_size: int | None = None, device: Any = None, download: bool = False,
                               progress: Progress | None = None, layer: str | None = None,
                               notes: Notes | None = None, force: bool = False, amp: bool = False,
                               workers: int | None = None) -> np.ndarray:
    """Read benchmark ``dataset`` under ``root``, encode every row with ``backbone``, write a feature directory.

    ``options`` are the benchmark reader's options; ``weights`` local backbone weights; ``download``
    allows fetching weights into the backbone's cache; ``device`` None picks CUDA when present.
    ``progress(done, total)`` is called after every batch. ``layer`` names the backbone module read
    (default: the penultimate layer); ``notes(line)`` receives one line when the weights needed a
    prefix stripped or keys left out (also listed in ``meta.json``); ``amp`` runs the backbone in mixed
    precision (on a GPU: float16 or bfloat16; on a CPU: bfloat16, which is rarely faster there).
    ``workers`` processes load and transform image files for the torch backbones (None: 0 with one
    usable CPU, else ``min(8, usable CPUs - 1)``; 0: in this process); on CUDA the batches are pinned
    and copied asynchronously. Refuses, before any work, to replace a feature set's files (``train/val/test.npz``, ``meta.json``)
    already in ``out`` unless ``force``. An embedded dataset (e.g. ``toxic-templates``) goes to
    `extract_embedded_features` (``root`` is then unused). Returns the ``(n_rows, dim)`` features.
    """
    if is_embedded(dataset):
        return extract_embedded_features(dataset, backbone, out, weights, options, batch_size=batch_size,
                                         device=device, download=download, progress=progress, layer=layer,
                                         notes=notes, force=force, amp=amp, workers=workers)
    out = _check_out(out, batch_size, force, workers)
    apply_thread_policy()
    options = dict(options or {})
    table = read_benchmark(dataset, root, **options)
    encoder = load_encoder(backbone, table.input_kind, _path(weights), device, download, layer)
    features = extract_features(table, encoder, batch_size, progress=progress, amp_device=_amp_device(amp, device),
                                workers=workers)
    _note(encoder, notes)
    write_features(table, features, out, {**_source(backbone, weights, encoder), "root": str(root),
                                          "options": options}, force=force)
    return features


def is_embedded(dataset: str) -> bool:
    """Whether ``dataset`` is an embedded dataset (built in memory) rather than a benchmark read from a copy."""
    try:
        return get_dataset_entry(dataset).embedded
    except GroupRobustError:  # not a registered dataset: read_benchmark names the benchmarks
        return False
