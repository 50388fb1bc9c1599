"""Checkpoints inside a run: where they live, how they are written and read, every RNG state, and the
SIGTERM/SIGINT request that makes the training loop write one and stop.

A run written at ``out`` keeps its checkpoint in the hidden sibling ``.<name>.ckpt/<run_id>.pt``
(`checkpoint_path`): outside the run's temporary directory, which an interrupted run removes and a
killed one leaves to be cleaned up, and found again by re-running the same command (same ``out``,
same run id). One file per run, replaced atomically each time (`save_checkpoint`), so a run killed
at any moment, while writing one included, leaves the previous checkpoint or the new one, never a
torn file. What a checkpoint holds is the training loop's business (`grouprobust.training`); this
module stores and loads it with ``torch.save`` / ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from grouprobust.output import write_atomic

#: Bumped when what a checkpoint holds changes; a checkpoint of another version is not resumed from.
CHECKPOINT_VERSION = 1

#: The signals that interrupt training with a checkpoint (preemption, Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_log = logging.getLogger("grouprobust.checkpoint")


def checkpoint_dir(out: Path | str) -> Path:
    """The hidden folder beside the run directory ``out`` that holds its checkpoints: ``.<name>.ckpt``."""
    out = Path(out)
    return out.parent / f".{out.name}.ckpt"


def checkpoint_path(out: Path | str, run_id: str) -> Path:
    """The checkpoint file of run ``run_id`` written at ``out``: ``.<name>.ckpt/<run_id>.pt``."""
    return checkpoint_dir(out) / f"{run_id}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, tuples and dicts of them) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: torch.save({"version": CHECKPOINT_VERSION, **state}, fh))


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any] | None:
    """The checkpoint of run ``run_id`` at ``path`` (its tensors on the CPU), or None when there is none.

    A file that cannot be read, of another format version or of another run is not resumed from (a
    warning says so): the run starts from the beginning and replaces it at its first checkpoint."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint costs the time it saved, never the run
        _log.warning("checkpoint %s cannot be read (%s); training from the beginning", path, type(err).__name__)
        return None
    if state.get("version") != CHECKPOINT_VERSION or state.get("run_id") != run_id:
        _log.warning("checkpoint %s belongs to another version or run; training from the beginning", path)
        return None
    return state


def remove_checkpoint(path: Path) -> None:
    """Delete the checkpoint at ``path`` (with the temporary file of a write that was killed), and its
    folder once it holds nothing else."""
    path.unlink(missing_ok=True)
    for partial in path.parent.glob(f".{path.name}.*.tmp"):  # `write_atomic`'s temporary names
        partial.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # absent, or other runs' checkpoints are there
        pass


# -- random number generators -----------------------------------------------------------------------

def global_rng_states(device: torch.device) -> dict[str, Any]:
    """The states of Python's, numpy's and torch's global generators (and CUDA's on a CUDA ``device``)."""
    kind, numpy_state, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(numpy_state.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Restore the states `global_rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states:
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def module_rng_states(model: torch.nn.Module) -> dict[str, Any]:
    """The generator states of ``model``'s submodules that own one (``get_rng_state``, e.g. the image
    input's augmentation), by submodule name."""
    return {name: m.get_rng_state() for name, m in model.named_modules() if callable(getattr(m, "get_rng_state", None))}


def set_module_rng_states(model: torch.nn.Module, states: dict[str, Any]) -> None:
    """Restore the states `module_rng_states` returned."""
    modules = dict(model.named_modules())
    for name, state in states.items():
        modules[name].set_rng_state(state)


# -- SIGTERM / SIGINT ---------------------------------------------------------------------------------

class StopRequest:
    """While active (a context manager), SIGTERM and SIGINT only record that training should stop at the
    next step boundary (``signum``); the loop then writes a checkpoint and raises `RunInterrupted`.

    The first signal puts the previous handlers back, so a second one acts as it did before (Ctrl-C
    twice stops at once). Outside the main thread (where Python cannot take signals) it does nothing.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()
