"""Several processes (GPUs) for one run, launched by ``torchrun``: the process group, the sharding of each
global batch, and the collectives the loop and the DRO methods use. Every helper is the identity in one process.

Under ``torchrun --nproc-per-node N -m grouprobust train ...`` every rank draws the same global batches
(the methods' samplers are seeded alike), takes its contiguous part of each (`shard_batch`: the parts'
union is the batch), and trains a `torch.nn.parallel.DistributedDataParallel` model whose averaged
gradient, with the loss rescaled by `global_share`, is the gradient of the one-process objective on the
whole batch. Statistics a method computes over the batch are summed (`sum_over_ranks`) or gathered
(`gather_batch`) across ranks, so every rank holds the same state. Only rank 0 writes (`is_main_process`).
"""

from __future__ import annotations

import atexit
import os

import torch

from grouprobust.errors import GroupRobustError

#: The environment variables torchrun sets in each process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def torchrun_world() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when this process was started by torchrun with more than one
    process, else None (read from the environment; nothing is initialised)."""
    if not all(name in os.environ for name in TORCHRUN_ENV):
        return None
    try:
        rank, world, local = (int(os.environ[name]) for name in TORCHRUN_ENV)
    except ValueError:
        raise GroupRobustError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, got "
                               f"{', '.join(os.environ[n] for n in TORCHRUN_ENV)}; launch with torchrun") from None
    return (rank, world, local) if world > 1 else None


def is_main_process() -> bool:
    """Whether this process writes the run (rank 0, or the only process)."""
    world = torchrun_world()
    return world is None or world[0] == 0


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def join_torchrun(device: torch.device, method: str, unsupported: str) -> torch.device:
    """Under torchrun (`torchrun_world`), initialise the process group (NCCL on CUDA, gloo on the CPU) and
    return this rank's device (``cuda:LOCAL_RANK`` on CUDA); in one process return ``device`` as it is.

    ``unsupported`` is why ``method`` cannot train on several processes ("" when it can): then a one-line
    error is raised before any process group is made."""
    world = torchrun_world()
    if world is None:
        return device
    if unsupported:
        raise GroupRobustError(f"method {method!r} cannot train on several processes: {unsupported}; run it in one "
                               "process (without torchrun), or use erm, iw, resample, groupdro, cvar-dro or chi2-dro",
                               subject="method")
    rank, size, local = world
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size)
        atexit.register(_leave)
    return device


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """``(rank, world size)`` of the process group; ``(0, 1)`` in one process."""
    if not is_distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shard_batch(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of the global batch ``idx`` (the parts of all ranks, in rank order, are
    ``idx``; sizes differ by at most one); ``idx`` itself in one process."""
    rank, size = rank_and_size()
    return idx if size == 1 else idx.tensor_split(size)[rank]


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in `DistributedDataParallel` when distributed (gradients averaged over ranks in backward;
    rank 0's weights broadcast first), else ``model``. The wrapper shares the model's parameters."""
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def global_share(loss: torch.Tensor, n_local: int, n_global: int) -> torch.Tensor:
    """A rank's loss on its ``n_local`` examples (a mean over them) rescaled so that the gradient DDP averages
    over ranks is that of the mean over all ``n_global``: times ``world size * n_local / n_global``. A rank
    with no example contributes zero (its loss on an empty batch is NaN). ``loss`` itself in one process."""
    rank, size = rank_and_size()
    if size == 1:
        return loss
    if n_local == 0:
        return torch.nan_to_num(loss, nan=0.0) * 0.0
    return loss * (size * n_local / n_global)


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over every rank (every rank gets the same sum); ``values`` in one process."""
    if not is_distributed():
        return values
    values = values.clone()
    torch.distributed.all_reduce(values)
    return values


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over the ranks; ``value`` in one process."""
    _, size = rank_and_size()
    return value if size == 1 else sum_over_ranks(value) / size


def gather_batch(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of ``local`` of every rank, concatenated in rank order (the global batch's order under
    `shard_batch`), and where this rank's rows start in it; ``(local, 0)`` in one process."""
    rank, size = rank_and_size()
    if size == 1:
        return local, 0
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    torch.distributed.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]), sum(sizes[:rank])
