"""Image files decoded and resized once into an on-disk array shared by every run that reads them.

`cached_images(paths, image_size, key=...)` returns a read-only ``np.memmap`` of uint8, shape
``(len(paths), 3, S, S)`` with ``S = stored_size(image_size)`` (256 for 224): each file's shorter side
resized to ``S`` (Pillow's bilinear, antialiased when shrinking), its centre square, RGB, rows in the
order of ``paths``. Training crops and augments these squares on the device
(`grouprobust.backbones.image_input.ImageInput`), so the files are decoded once per resolution,
not once per epoch, run and method.

The entry is ``<cache root>/images/<sha256 of (key, S, paths)>/`` holding ``images.npy`` and
``meta.json``; ``key`` is the caller's fingerprint of the files' content (`files_key`), so edited
files get a new entry. The first build decodes with `decode_workers` processes (JPEG at a reduced
scale with ``Image.draft`` when the image is much larger than ``S``), reports ``progress(done,
total)``, checks the free space first, and renames the finished folder into place under a file lock
(see `grouprobust.data.disk_cache`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from grouprobust.backbones.image_input import EVAL_CROP
from grouprobust.data.disk_cache import build_once, cache_folder, cache_root, check_free_space, entry_name
from grouprobust.data.fingerprint import files_digest
from grouprobust.data.image_loader import ImageFiles, Unreadable, check_workers, collate_images
from grouprobust.errors import GroupRobustError
from grouprobust.output import write_json_atomic
from grouprobust.threads import policy_threads, recent_busy_cpus, usable_cpus

ARRAY, META = "images.npy", "meta.json"
DECODE_BATCH = 32
MAX_DECODE_WORKERS = 8
FORMAT = 1


def stored_size(image_size: int) -> int:
    """Side in pixels of the square the cache stores for inputs of ``image_size`` pixels:
    ``round(image_size / 0.875)`` (256 for 224, 37 for 32)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise GroupRobustError(f"image_size must be a positive integer, got {image_size!r}", subject="data:image_size")
    return round(image_size / EVAL_CROP)


def files_key(paths: Sequence[str]) -> str:
    """``"sha256:<hex>"`` of the files at ``paths`` in order: each file's path relative to their common
    folder, its length and its bytes. A one-line error names a file that cannot be read."""
    files = [Path(p).expanduser().absolute() for p in paths]
    if not files:
        return "sha256:" + files_digest(Path("."), [])
    base = Path(os.path.commonpath([f.parent for f in files]))
    try:
        return "sha256:" + files_digest(base, files)
    except OSError as err:
        raise GroupRobustError(f"{err.filename or base}: cannot be read ({err.strerror or err}); replace the file or "
                               "fix the metadata") from None


def decode_workers(workers: int | None = None, usable: int | None = None, busy: float | None = None) -> int:
    """Processes that decode files for the cache: ``workers`` if given (checked); else 0 unless at least
    two CPUs are idle for this process (`grouprobust.threads.policy_threads` of the ``usable`` CPUs and
    the ``busy`` ones other processes keep running), and then one per idle CPU, at most 8.

    Decoding is the only work (the main process only copies finished batches), so idle CPUs are worth
    a process each; on CPUs that other processes keep busy, worker processes only add start-up and
    transfer cost. ``benchmarks/image_cache_build.py`` on 2 CPUs under a load of ~8 runnable tasks:
    512 JPEGs (500x375) to 256 px, workers 0 / 1 / 2 took 4.35 / 5.16 / 4.45 s; to 37 px 2.50 / 2.49 /
    2.13 s."""
    check_workers(workers)
    if workers is not None:
        return workers
    usable = usable_cpus() if usable is None else usable
    idle = policy_threads(usable, recent_busy_cpus() if busy is None else busy)
    return 0 if idle <= 1 else min(MAX_DECODE_WORKERS, idle)


class SquareArray:
    """PIL image -> uint8 array ``(3, side, side)``: the centre square of the image resized to ``side``
    (the same as resizing the shorter side to ``side`` and cropping the centre). A class so that it
    pickles into DataLoader workers."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        width, height = image.size
        short = min(width, height)
        box = ((width - short) / 2, (height - short) / 2, (width + short) / 2, (height + short) / 2)
        square = image.resize((self.side, self.side), Image.BILINEAR, box=box)
        return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


def decoded_batches(paths: list[str], side: int, workers: int) -> Iterator[np.ndarray]:
    """uint8 ``(batch, 3, side, side)`` arrays of the images at ``paths`` in order, decoded by ``workers``
    processes (0: in this one); the first unreadable file raises its one-line error."""
    files = ImageFiles(paths, SquareArray(side), draft=side)
    if workers == 0:
        batches: Iterable[Any] = (collate_images([files[i] for i in range(start, min(start + DECODE_BATCH, len(files)))])
                                  for start in range(0, len(files), DECODE_BATCH))
    else:
        from torch.utils.data import DataLoader

        batches = DataLoader(files, batch_size=DECODE_BATCH, shuffle=False, collate_fn=collate_images,
                             num_workers=workers)
    for batch in batches:
        if isinstance(batch, Unreadable):
            raise GroupRobustError(batch.message)
        yield batch


def _open(folder: Path, count: int, side: int) -> np.memmap:
    path = folder / ARRAY
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise GroupRobustError(f"{path} cannot be read ({err}); the cache entry is damaged, delete {folder}") from None
    if array.dtype != np.uint8 or array.shape != (count, 3, side, side):
        raise GroupRobustError(f"{path} holds {array.dtype} {array.shape}, not uint8 {(count, 3, side, side)}; the cache "
                               f"entry is damaged, delete {folder}")
    return array


def _build(folder: Path, paths: list[str], side: int, key: str, progress: Callable[[int, int], None] | None,
           workers: int | None) -> None:
    count = len(paths)
    check_free_space(folder.parent, count * 3 * side * side + 2**20, f"{count} images at {side}x{side}")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        array = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=np.uint8, shape=(count, 3, side, side))
        done = 0
        if progress is not None:
            progress(0, count)
        for batch in decoded_batches(paths, side, decode_workers(workers)):
            array[done:done + len(batch)] = batch
            done += len(batch)
            if progress is not None:
                progress(done, count)
        array.flush()
        del array
        with open(tmp / ARRAY, "rb+") as fh:
            os.fsync(fh.fileno())
        write_json_atomic(tmp / META, {"format": FORMAT, "key": key, "side": side, "count": count,
                                       "dtype": "uint8", "shape": [count, 3, side, side], "first_path": paths[0]})
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_images(paths: Sequence[str], image_size: int, *, key: str, root: Path | None = None,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> np.memmap:
    """Read-only uint8 ``np.memmap`` ``(len(paths), 3, S, S)``, ``S = stored_size(image_size)``, of the
    images at ``paths`` (in that order), from the cache under ``root`` (default `cache_root`), built
    first if absent. ``key``: the caller's fingerprint of the files' content (`files_key`).
    ``progress(done, total)`` is called while building (never on a cache hit); ``workers``: decoding
    processes (default `decode_workers`). An unreadable image, or too little disk space, is a one-line
    error and leaves no entry behind."""
    paths = [str(p) for p in paths]
    if not paths:
        raise GroupRobustError("no image files to cache; the dataset has no images")
    side = stored_size(image_size)
    images = cache_folder(root, "images")
    name = entry_name("images", FORMAT, key, side, paths)
    folder = images / name
    build_once(images, name, folder / META, lambda: _build(folder, paths, side, key, progress, workers))
    return _open(folder, len(paths), side)


__all__ = ["cache_root", "cached_images", "decode_workers", "files_key", "stored_size"]
