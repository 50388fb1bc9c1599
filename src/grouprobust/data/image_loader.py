"""Image files to a backbone through one ``torch.utils.data.DataLoader`` for a whole extraction.

Decoding and transforming images is what limits a feature pass on a GPU, so the files are read by
``workers`` processes (started once per extraction) while the device encodes the previous batch.
Order is kept (no shuffling; the loader returns batches in index order). On CUDA the batches are
collated into pinned memory and copied with ``non_blocking=True``; elsewhere neither is used.

An unreadable file does not raise inside a worker (the loader would re-raise it re-worded, over many
lines): the worker hands back an `Unreadable` marker and the caller raises the same one-line
`GroupRobustError` a serial pass gives. torch is imported only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError
from grouprobust.threads import usable_cpus

MAX_WORKERS = 8  # beyond this the device, not decoding, is the limit for the backbones used here


def load_image(path: str, draft: int | None = None) -> Any:
    """The RGB PIL image in ``path``; a one-line `GroupRobustError` naming the file if it cannot be read.

    ``draft``: a JPEG is decoded at the smallest reduced scale (1/2, 1/4, 1/8) whose sides are both
    still at least ``draft`` pixels, which is several times faster when the image is much larger
    than needed; other formats are decoded whole."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if draft is not None:
                im.draft("RGB", (draft, draft))
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError):
        raise GroupRobustError(f"{path}: cannot be read as an image; replace the file or fix the metadata") from None


@dataclass(frozen=True)
class Unreadable:
    """Stands for an item (or a batch) that could not be loaded; ``message`` is its one-line error."""

    message: str


class ImageFiles:
    """A map-style dataset: item ``i`` is ``transform(load_image(paths[i], draft))``, or an `Unreadable`."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], Any], draft: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.transform(load_image(self.paths[index], self.draft))
        except GroupRobustError as err:
            return Unreadable(str(err))


def collate_images(items: list[Any]) -> Any:
    """The ``(len(items), C, H, W)`` tensor of ``items`` (a numpy array when they are numpy arrays), or the
    first `Unreadable` among them."""
    import torch

    for item in items:
        if isinstance(item, Unreadable):
            return item
    # np.stack for arrays: torch.stack of uint8 tensors measured ~700x slower (0.44 s for 32 of 3x256x256)
    return np.stack(items) if isinstance(items[0], np.ndarray) else torch.stack(items)


def check_workers(workers: Any) -> None:
    """Raise a one-line error unless ``workers`` is None or a non-negative int."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise GroupRobustError(f"workers must be a non-negative integer (0 loads images in this process), got "
                               f"{workers!r}; leave it unset for the automatic choice", subject="workers")


def choose_workers(workers: int | None = None, usable: int | None = None, device: Any = None) -> int:
    """``workers`` if given (checked); else, when the model runs on an accelerator (``device`` not a
    CPU), 0 with one usable CPU and ``min(8, usable - 1)`` otherwise (one CPU left to the process that
    feeds the device), and 0 when it runs on the CPU: the model then keeps every core busy and loading
    processes only compete with it (`benchmarks/feature_pass.py` measured workers=1 1.24x slower than 0
    on 2 cores). ``usable`` defaults to `usable_cpus`."""
    check_workers(workers)
    if workers is not None:
        return workers
    if device is not None and getattr(device, "type", str(device)) == "cpu":
        return 0
    usable = usable_cpus() if usable is None else usable
    return 0 if usable <= 1 else min(MAX_WORKERS, usable - 1)


def loader_options(device: Any, workers: int) -> dict[str, dict[str, Any]]:
    """Keyword arguments for a batch's way to ``device`` (a torch device): ``"loader"`` for the
    ``DataLoader`` (``num_workers``, ``pin_memory``), ``"copy"`` for ``Tensor.to`` (``non_blocking``).

    Pinned memory and asynchronous copies go together, on CUDA only: a non-blocking copy from
    pageable memory is synchronous anyway, and pinning for a CPU device is wasted work.
    """
    cuda = device.type == "cuda"
    return {"loader": {"num_workers": workers, "pin_memory": cuda}, "copy": {"non_blocking": cuda}}


def image_batches(paths: Sequence[str], transform: Callable[[Any], Any], batch_size: int, device: Any,
                  workers: int | None = None, draft: int | None = None) -> Iterator[Any]:
    """``(batch, C, H, W)`` tensors on ``device`` of ``paths`` in order, ``batch_size`` at a time, loaded by
    ``workers`` processes (see `choose_workers`; ``draft`` as in `load_image`); the first unreadable file
    raises its one-line error."""
    from torch.utils.data import DataLoader

    options = loader_options(device, choose_workers(workers, device=device))
    loader = DataLoader(ImageFiles(paths, transform, draft), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_images, **options["loader"])
    for batch in loader:
        if isinstance(batch, Unreadable):
            raise GroupRobustError(batch.message)
        yield batch.to(device, **options["copy"])
