"""Weights from a state-dict file fitted to a module: prefixes stripped, head keys of another shape skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grouprobust.errors import GroupRobustError

PREFIX = "module."


def last_linear(model: Any) -> str | None:
    """Name of the model's last ``nn.Linear`` (taken to be its classifier head), or None."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors saved at ``path``: a state dict, or one wrapped under ``state_dict`` / ``model``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure here means the file is not a readable state dict
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GroupRobustError(f"{path}: cannot be read as a PyTorch state dict ({first[:200]})",
                               subject="weights") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise GroupRobustError(f"{path}: holds no state dict (a mapping of parameter names to tensors); save "
                               "model.state_dict()", subject="weights")
    return state


def fit_state_dict(model: Any, state: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """Load ``state`` into ``model``; returns the report ``{"stripped_prefix", "ignored_keys"}``.

    A ``module.`` prefix on every key is stripped; keys the model lacks, and head keys (of its
    last ``nn.Linear``) of another shape, are skipped and listed in ``ignored_keys``. A missing
    key outside the head, or any other shape mismatch, raises a `GroupRobustError`.
    """
    own = model.state_dict()
    stripped = None
    if state and all(k.startswith(PREFIX) for k in state) and not any(k.startswith(PREFIX) for k in own):
        state = {k[len(PREFIX):]: v for k, v in state.items()}
        stripped = PREFIX
    head = last_linear(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    extra = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    bad = [k for k in mismatched if k not in head_keys]
    if bad:
        k = bad[0]
        raise GroupRobustError(f"{source}: does not fit {name} ({k} has shape {tuple(state[k].shape)}, the model "
                               f"expects {tuple(own[k].shape)}); pass weights saved from {name}", subject="weights")
    missing = [k for k in own if k not in state and k not in head_keys and not k.endswith("num_batches_tracked")]
    if missing:
        raise GroupRobustError(f"{source}: does not fit {name} (lacks {len(missing)} of its keys, e.g. {missing[0]}); "
                               f"pass weights saved from {name}", subject="weights")
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched}, strict=False)
    return {"stripped_prefix": stripped, "ignored_keys": sorted(extra + mismatched)}


def fit_weights_file(model: Any, weights: Path | None, name: str) -> dict[str, Any]:
    """`fit_state_dict` of the file ``weights`` into ``model``; an empty report when there is none."""
    if weights is None:
        return {}
    return fit_state_dict(model, read_state_dict(weights), name, weights)


__all__ = ["fit_state_dict", "fit_weights_file", "last_linear", "read_state_dict"]
