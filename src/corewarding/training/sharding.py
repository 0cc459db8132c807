"""How the models are spread over processes: none, DDP, FSDP2 or DeepSpeed ZeRO-3, and full weights on demand.

FSDP2 is applied here, with torch's own ``fully_shard``, rather than through accelerate's FSDP plugin: the
plugin only exists for accelerators (on CPU processes accelerate silently falls back to DDP), while
``fully_shard`` over a gloo device mesh runs on CPU too, so the sharded path that users run on GPUs is the
one the tests run. accelerate still starts the processes, picks the device and reads the launch config:
an ``accelerate launch --config_file configs/accelerate/fsdp2.yaml`` launch selects ``fsdp2`` here, with
that file's ``fsdp_reshard_after_forward`` and ``fsdp_activation_checkpointing``.

Every sharded model (the policy, the EMA teacher, the KL reference) is wrapped the same way: one FSDP unit
per decoder layer plus the root, the same mesh, so the teacher's local shard of a parameter lines up with
the policy's local shard of it and the EMA update runs shard by shard, with no full copy anywhere.

Sampling with ``generate``, syncing a rollout engine and saving a Hugging Face export need the whole
weights; :func:`full_parameters` gathers them for the duration of one block only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from corewarding.errors import ConfigError


def resolve_strategy(requested: str, accelerator) -> str:
    """The strategy to run: ``requested`` unless ``auto``, which reads the accelerate launch.

    auto: a DeepSpeed launch → ``deepspeed``; an FSDP launch (on a GPU, or the same config on CPU
    processes, where accelerate reports DDP) → ``fsdp2``; several processes → ``ddp``; else ``none``.
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    fsdp_launch = kind == DistributedType.FSDP or _env_flag("ACCELERATE_USE_FSDP")
    if fsdp_launch and os.environ.get("FSDP_VERSION", "2") != "2":
        raise ConfigError(
            "the accelerate launch config asks for FSDP version 1; corewarding shards with FSDP2 "
            "(set fsdp_version: 2, as configs/accelerate/fsdp2.yaml does)"
        )
    if requested == "auto":
        if kind == DistributedType.DEEPSPEED:
            return "deepspeed"
        if fsdp_launch:
            return "fsdp2"
        return "ddp" if accelerator.num_processes > 1 else "none"
    if requested == "deepspeed" and kind != DistributedType.DEEPSPEED:
        raise ConfigError(
            "distributed.strategy=deepspeed needs a DeepSpeed launch: accelerate launch --config_file "
            "configs/accelerate/zero3.yaml -m corewarding train ..."
        )
    if requested in ("none", "ddp") and kind == DistributedType.DEEPSPEED:
        raise ConfigError(f"distributed.strategy={requested} contradicts the DeepSpeed launch config")
    if requested == "none" and accelerator.num_processes > 1:
        return "ddp"
    if requested == "ddp" and accelerator.num_processes == 1:
        return "none"
    return requested


def launch_activation_checkpointing() -> bool:
    """``fsdp_activation_checkpointing: true`` in the accelerate launch config."""
    return _env_flag("FSDP_ACTIVATION_CHECKPOINTING")


def launch_reshard_after_forward(default: bool) -> bool:
    """``fsdp_reshard_after_forward`` of the accelerate launch config, when it sets one."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD")
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "full_shard")


def deepspeed_launch() -> bool:
    """True under an ``accelerate launch`` whose config asks for DeepSpeed."""
    return _env_flag("ACCELERATE_USE_DEEPSPEED")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, found by the class names transformers marks as not to be split."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(
            f"cannot find the decoder layers of {type(model).__name__} to shard (its _no_split_modules is "
            f"{sorted(names)}); use distributed.strategy=ddp for this model"
        )
    return layers


def device_mesh(device: torch.device):
    """A 1-D mesh over all processes on ``device``'s type (cuda with NCCL, cpu with gloo)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size() if dist.is_initialized() else 1
    if not dist.is_initialized():
        raise ConfigError("FSDP2 needs torch.distributed; launch with accelerate launch or torchrun")
    return init_device_mesh(device.type, (world,))


def shard_fsdp2(
    model: nn.Module, mesh, compute_dtype: torch.dtype, reshard_after_forward: bool = True
) -> nn.Module:
    """Apply ``fully_shard`` to every decoder layer and to the root, in place; returns ``model``.

    Parameters stay in their storage dtype (fp32 master weights) as local shards; the all-gather casts them
    to ``compute_dtype`` for the forward and backward, and gradients are reduce-scattered in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for unit in [*decoder_layers(model), model]:
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
        unit._corewarding_reshard_after_forward = reshard_after_forward  # restored by full_parameters
    return model


def is_fsdp2(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def is_zero3(model: nn.Module) -> bool:
    """True for a module whose parameters DeepSpeed ZeRO-3 has partitioned."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextlib.contextmanager
def full_parameters(model: nn.Module, modifier_rank: int | None = None) -> Iterator[None]:
    """Inside the block ``model`` holds its full parameters (for sampling, syncing an engine, exporting).

    FSDP2: every unit is all-gathered once and told not to reshard after each forward, so a ``generate``
    of any length runs without collectives (processes may generate different numbers of tokens).
    ZeRO-3: DeepSpeed's ``GatheredParameters`` (``modifier_rank``: the process whose changes to the gathered
    weights are kept and re-partitioned on exit; None for read-only use). Anything else: a no-op.
    """
    if is_fsdp2(model):
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(_reshard_default(unit), recurse=False)
        return
    if is_zero3(model):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=modifier_rank):
            yield
        return
    yield


def _reshard_default(unit) -> bool:
    """The reshard-after-forward setting ``unit`` was sharded with (kept on it by :func:`shard_fsdp2`)."""
    return getattr(unit, "_corewarding_reshard_after_forward", True)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of ``t`` (a DTensor's local tensor, ZeRO-3's ``ds_tensor``), or ``t`` itself."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        return t.to_local()
    ds = getattr(t, "ds_tensor", None)
    return ds if ds is not None else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective for a DTensor: every process must call it, in the same order)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """An FSDP2 model's whole state dict, in CPU memory of process 0 only (empty on the others).

    A collective: every process must call it. Gathered tensor by tensor by torch's ``get_model_state_dict``,
    so no GPU ever holds the whole model in full precision.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
