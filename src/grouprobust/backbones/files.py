"""Backbones saved as files that carry their own weights: TorchScript (``torch.jit.save``) and
``torch.export.save`` programs (``.pt2``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from grouprobust.errors import GroupRobustError


def _first_line(err: Exception) -> str:
    return ((str(err).strip().splitlines() or [type(err).__name__])[0])[:200]


def torchscript_module(path: Path, device: Any = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript module saved at ``path``, on ``device``. torch.jit is deprecated in recent torch; its
    deprecation warning is silenced for this one call (the format is still read while torch reads it)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as err:  # not a TorchScript archive
        raise GroupRobustError(f"{path}: cannot be read as a TorchScript file ({_first_line(err)}); for a state dict "
                               "give a model name as backbone and the file as weights", subject="backbone") from None


def exported_program(path: Path) -> Any:
    """The ``torch.export.ExportedProgram`` saved at ``path`` (``torch.export.save``)."""
    try:
        return torch.export.load(str(path))
    except Exception as err:  # not an exported program
        raise GroupRobustError(f"{path}: cannot be read as a torch.export program ({_first_line(err)}); save the "
                               "backbone with torch.export.save(torch.export.export(model, (x,), dynamic_shapes=...), "
                               "'model.pt2')", subject="backbone") from None


def exported_input_shape(program: Any, path: Path) -> tuple[Any, ...]:
    """The shape of the program's one input as exported: ints for static sizes, symbols for dynamic ones.
    A program with more than one input, or a static batch size, is refused (it could not train on batches)."""
    users = set(program.graph_signature.user_inputs)
    shapes = [node.meta["val"].shape for node in program.graph.nodes
              if node.op == "placeholder" and node.name in users and "val" in node.meta]
    if len(shapes) != 1:
        raise GroupRobustError(f"{path}: the exported backbone takes {len(shapes)} inputs; export one that takes a "
                               "single image batch", subject="backbone")
    shape = tuple(shapes[0])
    if isinstance(shape[0], int):
        raise GroupRobustError(f"{path}: exported with a fixed batch size of {shape[0]}; export it with a dynamic "
                               "batch: torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("
                               "'batch')},))", subject="backbone")
    return shape


__all__ = ["exported_input_shape", "exported_program", "torchscript_module"]
