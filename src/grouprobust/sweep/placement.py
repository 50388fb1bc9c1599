"""Where a sweep's trials run: the concurrent slots of this machine or of a Ray cluster, each with its
GPU (or none) and its share of that GPU, and the order a dry run shows.

A slot is one trial at a time. The local executor has one slot per ``1 / gpus_per_trial`` of each
visible GPU (default: one per GPU; one CPU slot without GPUs); a Ray cluster has, on each node, as
many slots as both its CPUs (``cpus_per_trial`` each) and its GPUs (``gpus_per_trial`` each) hold.
Imports no torch at module level: `pin_gpu` runs in a fresh worker process before torch touches CUDA.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

from grouprobust.errors import GroupRobustError

#: Waves a dry run lists before it says how many more there are.
SHOWN_WAVES = 8


@dataclass(frozen=True)
class Slot:
    """One trial at a time on ``node`` (0 for this machine), on GPU ``gpu`` of that node (None: CPU only)
    with ``share`` of it (a fraction in (0, 1]; 0 on the CPU)."""

    node: int
    gpu: int | None
    share: float

    def describe(self, nodes: int = 1) -> str:
        """``GPU 1 (0.5 of it)``, ``GPU 0``, or ``CPU``; with the node when the cluster has several."""
        where = "CPU" if self.gpu is None else f"GPU {self.gpu}" + (f" ({self.share:g} of it)" if self.share < 1 else "")
        return f"node {self.node} {where}" if nodes > 1 else where


def visible_gpus() -> int:
    """The number of CUDA GPUs this process sees (after ``CUDA_VISIBLE_DEVICES``); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pin_gpu(device: str) -> None:
    """Make ``device`` (a CUDA device id as the parent saw it) the only GPU of this worker process:
    ``CUDA_VISIBLE_DEVICES``, read by CUDA when this process first uses it."""
    os.environ["CUDA_VISIBLE_DEVICES"] = device


def parent_device_id(index: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry of this process's GPU ``index`` (its own list, if it has one)."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[index] if index < len(visible) else str(index)


def check_gpus_per_trial(gpus_per_trial: float | None) -> None:
    """Raise a one-line error unless ``gpus_per_trial`` is None or in (0, 1]: a run trains on one GPU."""
    if gpus_per_trial is None:
        return
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, (int, float)) or not 0 < gpus_per_trial <= 1:
        raise GroupRobustError(f"gpus_per_trial must be a fraction of one GPU in (0, 1], got {gpus_per_trial!r}; a run "
                               "trains on one GPU (several GPUs for one run: torchrun, see docs/gpus.md)",
                               subject="gpus_per_trial")


def check_cpus_per_trial(cpus_per_trial: float | None) -> None:
    """Raise a one-line error unless ``cpus_per_trial`` is None or positive."""
    if cpus_per_trial is None:
        return
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float)) or cpus_per_trial <= 0:
        raise GroupRobustError(f"cpus_per_trial must be a positive number of CPUs, got {cpus_per_trial!r}",
                               subject="cpus_per_trial")


def _per_gpu(gpus_per_trial: float) -> int:
    """Trials one GPU holds at once at ``gpus_per_trial`` each (as Ray packs fractions)."""
    return max(1, int(math.floor(1.0 / gpus_per_trial + 1e-9)))


def no_gpus(gpus_per_trial: float, where: str) -> GroupRobustError:
    """The one-line refusal of a request for GPUs where there are none."""
    return GroupRobustError(f"gpus_per_trial {gpus_per_trial:g} asks for GPUs but {where} has none; leave "
                            "--gpus-per-trial out to train on CPUs, or run the sweep where GPUs are",
                            subject="gpus_per_trial")


def local_slots(gpus: int, gpus_per_trial: float | None = None) -> list[Slot]:
    """The local executor's slots on a machine with ``gpus`` visible GPUs: ``1 / gpus_per_trial`` per GPU
    (default one per GPU), spread over the GPUs in turn; one CPU slot without GPUs. Raises a one-line
    error when GPUs are asked for and there are none."""
    check_gpus_per_trial(gpus_per_trial)
    if gpus == 0:
        if gpus_per_trial:
            raise no_gpus(gpus_per_trial, "this machine (torch sees no CUDA GPU)")
        return [Slot(0, None, 0.0)]
    share = gpus_per_trial or 1.0
    return [Slot(0, k % gpus, share) for k in range(gpus * _per_gpu(share))]


def cluster_slots(nodes: Sequence[dict[str, float]], gpus_per_trial: float, cpus_per_trial: float) -> list[Slot]:
    """The slots of a Ray cluster whose nodes have the resources ``nodes`` (``{"CPU": n, "GPU": m}`` each):
    on each node, as many trials as fit both its CPUs and its GPUs at once (GPUs taken in turn).

    Raises a one-line error when GPUs are asked for and no node has any, or when no node can hold one
    trial (Ray would wait for ever)."""
    check_gpus_per_trial(gpus_per_trial or None)
    check_cpus_per_trial(cpus_per_trial)
    if gpus_per_trial and not any(node.get("GPU", 0) for node in nodes):
        raise no_gpus(gpus_per_trial, "the Ray cluster")
    slots: list[Slot] = []
    for index, node in enumerate(nodes):
        count = int(math.floor(node.get("CPU", 0) / cpus_per_trial + 1e-9))
        gpus = int(node.get("GPU", 0))
        if gpus_per_trial:
            count = min(count, gpus * _per_gpu(gpus_per_trial))
        slots += [Slot(index, k % gpus if gpus_per_trial else None, gpus_per_trial) for k in range(count)]
    if not slots:
        largest = max(nodes, key=lambda n: n.get("CPU", 0), default={})
        raise GroupRobustError(f"no node of the Ray cluster holds one trial of {cpus_per_trial:g} CPUs"
                               + (f" and {gpus_per_trial:g} GPU" if gpus_per_trial else "")
                               + f" (the largest has {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs); "
                               "ask for less per trial", subject="cpus_per_trial")
    return slots


def describe_placement(slots: Sequence[Slot], trials: Sequence[tuple[str, str]]) -> list[str]:
    """Lines showing which trials (``(run id, label)`` in the order they start) run at the same time on
    which slot, assuming trials take equal times: wave ``w`` is trials ``w * len(slots)`` onwards."""
    nodes = len({s.node for s in slots})
    gpus = sorted({(s.node, s.gpu) for s in slots if s.gpu is not None})
    share = next((s.share for s in slots if s.gpu is not None), 0.0)
    head = f"placement: {len(slots)} trial(s) at a time"
    head += f" on {len(gpus)} GPU(s), {share:g} GPU per trial" if gpus else " on the CPU"
    lines = [head + (" (equal trial times assumed; Ray may place them otherwise)" if nodes > 1 else "")]
    width = len(slots)
    waves = [trials[i:i + width] for i in range(0, len(trials), width)]
    for number, wave in enumerate(waves[:SHOWN_WAVES], start=1):
        lines.append(f"  wave {number}: " + "; ".join(f"{label} ({run_id}) on {slot.describe(nodes)}"
                                                      for (run_id, label), slot in zip(wave, slots)))
    if len(waves) > SHOWN_WAVES:
        lines.append(f"  ... {len(waves) - SHOWN_WAVES} more wave(s)")
    return lines
