"""LoRA adapters (through ``peft``) on a backbone's ``nn.Linear`` layers."""

from __future__ import annotations

from torch import nn

from grouprobust.errors import GroupRobustError
from grouprobust.optional import import_optional


def apply_lora(module: nn.Module, rank: int, alpha: float, dropout: float) -> nn.Module:
    """``module`` with LoRA adapters of ``rank`` (scaled by ``alpha / rank``, ``dropout`` on their input) injected
    into every ``nn.Linear`` (attention and projection layers), in place; only the adapters' parameters
    require gradients afterwards. At initialisation the output is unchanged (the adapters' B matrices are 0)."""
    peft = import_optional("peft", "lora", "finetune=lora", subject="backbone")
    if rank < 1:
        raise GroupRobustError(f"LoRA rank must be at least 1, got {rank}", subject="backbone")
    targets = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    if not targets:
        raise GroupRobustError(f"LoRA adapts nn.Linear layers and this backbone ({type(module).__name__}) has none; "
                               "use finetune=full or finetune=head", subject="backbone")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    module = peft.inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)
    return module


__all__ = ["apply_lora"]
