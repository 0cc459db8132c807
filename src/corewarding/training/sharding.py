"""Full parameters and full state dicts under sharded training (FSDP, DeepSpeed ZeRO-3).

Sampling with ``generate``, the EMA teacher update and saving a Hugging Face checkpoint all need the whole
weights, while FSDP and ZeRO-3 keep only a shard per process. These helpers gather them for the duration
of one block, and are no-ops under DDP and single-process runs, so the trainer reads the same either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def is_sharded(accelerator) -> bool:
    """True when each process holds only part of the weights (FSDP, or DeepSpeed ZeRO stage 3)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.deepspeed_config["zero_optimization"].get("stage", 0) == 3
    return False


@contextlib.contextmanager
def full_parameters(accelerator, model) -> Iterator[None]:
    """Inside the block the unwrapped module holds its full parameters (read-only use: sampling, EMA)."""
    from accelerate.utils import DistributedType

    if not is_sharded(accelerator):
        yield
        return
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
        return
    if getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(model, writeback=False, recurse=True):
        yield


def full_state_dict(accelerator, model) -> dict[str, Any]:
    """The whole model's state dict (a collective call under sharding: every process must make it)."""
    return accelerator.get_state_dict(model)
