"""torch.distributed facts every training loop asks (tokenizers, the world model, policies)."""

from __future__ import annotations

import torch
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group (a multi-worker Ray Train run)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def agree(flag: bool, device: torch.device) -> bool:
    """True on every worker if it is True on any: all stop on the same step, although time
    budgets are measured per process."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or `net` itself."""
    return getattr(net, "module", net)
