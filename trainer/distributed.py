"""Distributed training under `torchrun`: process group, data-parallel wrapping, reductions.

| strategy | wraps the model with                                             |
|----------|------------------------------------------------------------------|
| `none`   | nothing (one process)                                            |
| `ddp`    | `DistributedDataParallel` (gradients all-reduced, CPU default)   |
| `fsdp`   | FSDP2 `fully_shard` per decoder layer, then the root (GPU default) |

`init_distributed()` reads torchrun's `RANK`/`WORLD_SIZE`/`LOCAL_RANK`; a plain `python` run is a
world of one. The backend is `nccl` on GPU and `gloo` on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Strategy", "DistributedContext", "init_distributed", "wrap_model", "all_reduce_sum"]

Strategy = Literal["auto", "none", "ddp", "fsdp"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DistributedContext:
    """Where this process sits: `rank` of `world_size`, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group this context started (no-op for a world of one)."""
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(*, device: str = "auto") -> DistributedContext:
    """Join the torchrun process group if there is one; pick the device (`auto`: CUDA if present).

    >>> init_distributed(device="cpu").world_size   # under plain python
    1
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    elif device == "cpu":
        target = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, device_id=target if target.type == "cuda" else None
        )
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=target
    )


def resolve_strategy(strategy: str, ctx: DistributedContext) -> str:
    """`auto` -> `none` for one process, `fsdp` on GPU, `ddp` on CPU."""
    if strategy not in ("auto", "none", "ddp", "fsdp"):
        raise ValueError(f"parallel strategy must be auto, none, ddp or fsdp, got {strategy!r}")
    if strategy == "auto":
        if not ctx.is_distributed:
            return "none"
        return "fsdp" if ctx.device.type == "cuda" else "ddp"
    if strategy != "none" and not ctx.is_distributed:
        return "none"
    return strategy


def wrap_model(module: nn.Module, *, strategy: str, ctx: DistributedContext) -> nn.Module:
    """Wrap `module` (already on `ctx.device`) for data-parallel training under `strategy`."""
    strategy = resolve_strategy(strategy, ctx)
    if strategy == "none":
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    # one shard group per decoder layer keeps peak memory to one unsharded layer at a time
    for layer in _decoder_layers(module):
        fully_shard(layer)
    fully_shard(module)
    return module


def _decoder_layers(module: nn.Module) -> list[nn.Module]:
    no_split = set()
    for sub in module.modules():
        no_split.update(getattr(sub, "_no_split_modules", None) or ())
    return [m for m in module.modules() if type(m).__name__ in no_split]


def all_reduce_sum(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum `value` over all processes (returned as a new tensor; identity for a world of one)."""
    value = value.detach().clone()
    if ctx.is_distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def unwrap(module: Any) -> Any:
    """The module inside a DDP wrapper (FSDP2 wraps in place, so it is returned as is)."""
    return getattr(module, "module", module)
