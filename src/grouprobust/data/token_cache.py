"""Texts tokenized once with a backbone's tokenizer and kept on disk for every run that uses them.

`cached_tokens(texts, tokenizer, max_length, key=...)` returns an int32 array ``(n, 2, L)``: row 0
the input ids (the tokenizer's own, with its special tokens, truncated to ``max_length``) padded on
the right with the tokenizer's pad id, row 1 the attention mask (1 on tokens, 0 on padding);
``L`` is the longest tokenized text, at most ``max_length``. The text backbone trims each batch to
its own longest text.

The entry is ``<cache root>/tokens/<sha256 of (key, tokenizer identity, max_length)>.npy``; ``key``
is the caller's fingerprint of the texts (`texts_key`) and the tokenizer's identity its class,
``name_or_path`` and a fingerprint of its vocabulary and rules (`tokenizer_identity`). Built once
under a file lock and written atomically (see `grouprobust.data.disk_cache`).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from grouprobust.data.disk_cache import build_once, cache_folder, check_free_space, entry_name
from grouprobust.errors import GroupRobustError
from grouprobust.output import write_atomic

CHUNK = 1024  # texts per tokenizer call (and per progress report)
FORMAT = 1


def texts_key(texts: Sequence[str]) -> str:
    """``"sha256:<hex>"`` of ``texts`` in order (each one's UTF-8 length and bytes)."""
    digest = hashlib.sha256()
    for text in texts:
        data = str(text).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    return "sha256:" + digest.hexdigest()


def tokenizer_identity(tokenizer: Any) -> dict[str, str]:
    """What decides a tokenizer's output: its class, ``name_or_path`` and the SHA-256 of its full
    definition (a fast tokenizer's serialised pipeline: vocabulary, normaliser, special tokens), or of
    its sorted vocabulary and special tokens for a slow one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        # the truncation and padding a fast tokenizer holds are those of its last call, not its definition
        pipeline.pop("truncation", None)
        pipeline.pop("padding", None)
        definition = json.dumps(pipeline, sort_keys=True)
    else:
        definition = json.dumps([sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "special_tokens_map", {})],
                                sort_keys=True, default=str)
    return {"class": type(tokenizer).__name__, "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
            "definition": hashlib.sha256(definition.encode()).hexdigest()}


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id; its end-of-text id where it has none (GPT-2), else 0 (the mask marks padding)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def _tokenize(texts: list[str], tokenizer: Any, max_length: int,
              progress: Callable[[int, int], None] | None) -> np.ndarray:
    ids: list[list[int]] = []
    if progress is not None:
        progress(0, len(texts))
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        ids += tokenizer(chunk, truncation=True, max_length=max_length, padding=False)["input_ids"]
        if progress is not None:
            progress(len(ids), len(texts))
    length = max((len(row) for row in ids), default=0)
    out = np.zeros((len(ids), 2, length), dtype=np.int32)
    out[:, 0] = pad_id(tokenizer)
    for i, row in enumerate(ids):
        out[i, 0, :len(row)] = row
        out[i, 1, :len(row)] = 1
    return out


def _read(path: Path, count: int) -> np.ndarray:
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise GroupRobustError(f"{path} cannot be read ({err}); the cache entry is damaged, delete it") from None
    if array.dtype != np.int32 or array.ndim != 3 or array.shape[:2] != (count, 2):
        raise GroupRobustError(f"{path} holds {array.dtype} {array.shape}, not int32 ({count}, 2, length); the cache "
                               "entry is damaged, delete it")
    return array


def cached_tokens(texts: Sequence[str], tokenizer: Any, max_length: int, *, key: str, root: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """int32 ``(len(texts), 2, L)``: input ids (right-padded with `pad_id`) and attention mask of ``texts``
    tokenized by ``tokenizer`` with truncation to ``max_length`` tokens; ``L`` the longest, at most
    ``max_length``. Read from the cache under ``root`` (default the cache root) or tokenized and stored
    there first; ``key`` is the caller's fingerprint of the texts (`texts_key`); ``progress(done,
    total)`` is called while tokenizing (never on a cache hit)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise GroupRobustError(f"max_length must be a positive integer, got {max_length!r}", subject="data:max_length")
    texts = [str(t) for t in texts]
    folder = cache_folder(root, "tokens")
    name = entry_name("tokens", FORMAT, key, tokenizer_identity(tokenizer), max_length)
    path = folder / f"{name}.npy"

    def build() -> np.ndarray:
        array = _tokenize(texts, tokenizer, max_length, progress)
        buffer = io.BytesIO()
        np.save(buffer, array)
        check_free_space(folder, buffer.tell() + 2**20, f"the tokens of {len(texts)} texts")
        write_atomic(path, buffer.getvalue())
        return array

    built = build_once(folder, name, path, build)
    return built if built is not None else _read(path, len(texts))


__all__ = ["cached_tokens", "pad_id", "texts_key", "tokenizer_identity"]
