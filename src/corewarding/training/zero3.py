"""DeepSpeed ZeRO-3 pieces for the EMA teacher, the KL reference and gradient accumulation.

Under ZeRO-3 the policy's weights exist on each rank only as a flat 1/world slice (``param.ds_tensor``),
with the fp32 master slice kept by the optimizer. An EMA teacher and a KL reference kept as full
replicas would undo the memory saving, so both are wrapped as frozen ZeRO-3 engines
(:func:`prepare_frozen`) partitioned over the same ranks as the policy: the same world size and the
same flattening give every parameter the same slice boundaries on every rank, so the EMA can be done
slice by slice without communication (:func:`ema_update_partitions`).

:func:`micro_batch_setup` reconciles the trainer's "one ``accelerator.backward`` per micro-batch, one
``optimizer.step()`` per update" loop with accelerate's DeepSpeed wrapper, which steps the engine inside
``backward``.

``deepspeed`` is imported lazily, so this module imports (and the rest of corewarding runs) without it.

CPU note (checked with deepspeed 0.19.8, accelerate 1.15, torch 2.13 CPU): DeepSpeed's CPU accelerator
falls back to gloo when ``oneccl_bindings_for_pytorch`` is missing, and ZeRO-3 (fp32 and bf16) trains on
CPU processes. accelerate only drives DeepSpeed with ``Accelerator(cpu=False)``; without CUDA its backend
detection then returns ``None`` and the state reports ``num_processes == 1`` on every rank although
DeepSpeed runs over the full world. Pass ``kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")]`` to
get a correct ``num_processes``/``process_index`` (tests/training/test_zero3.py does).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "MicroBatchPlan",
    "ema_update_partitions",
    "frozen_ds_config",
    "local_master_partition",
    "micro_batch_setup",
    "prepare_frozen",
]


def _ds_config_of(accelerator_or_ds_config: Accelerator | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(accelerator_or_ds_config, Mapping):
        return accelerator_or_ds_config
    plugin = accelerator_or_ds_config.state.deepspeed_plugin
    if plugin is None:
        raise ValueError("the accelerator has no DeepSpeed plugin; launch with a DeepSpeed accelerate config")
    return plugin.deepspeed_config


def _auto_keys(config: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(config, Mapping):
        for key, value in config.items():
            yield from _auto_keys(value, f"{prefix}{key}.")
    elif config == "auto":
        yield prefix.rstrip(".")


def frozen_ds_config(
    accelerator_or_ds_config: Accelerator | Mapping[str, Any], *, fp32: bool = False
) -> dict[str, Any]:
    """The policy's DeepSpeed config, rewritten for a model that only runs forwards.

    A copy, so the policy's engine is untouched. ``optimizer``/``scheduler`` go (nothing is trained; a
    config optimizer would otherwise be built for a model without trainable parameters). The ZeRO stage
    is kept at 3 so the frozen model is partitioned over the same ranks as the policy; any other stage
    becomes 0 (a replica), as TRL does, because stages 1-2 only shard optimizer state and gradients.

    ``fp32=True`` disables bf16/fp16 so the partitions are stored, gathered and used in fp32: the EMA
    teacher needs this because with a ≈ 1e-4 an update ``a * (policy - teacher)`` is far below half a
    bf16 ulp of the weight (2**-9 relative) and would be rounded away, freezing the teacher. The cost is
    an fp32 teacher forward. The KL reference keeps the policy's precision (``fp32=False``).

    Raises ``ValueError`` when a value is still ``"auto"``: accelerate only fills those while preparing
    the policy, so call this after ``accelerator.prepare(policy, ...)``.
    """
    config = copy.deepcopy(dict(_ds_config_of(accelerator_or_ds_config)))
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = dict(config.get("zero_optimization", {}))
    if zero.get("stage", 0) != 3:
        zero["stage"] = 0
    config["zero_optimization"] = zero
    if fp32:
        for key in ("bf16", "bfloat16", "fp16"):
            if key in config:
                config[key] = {**config[key], "enabled": False}
    unresolved = sorted(_auto_keys(config))
    if unresolved:
        raise ValueError(
            f"DeepSpeed config values still 'auto': {unresolved}; call after accelerator.prepare(policy) "
            "(accelerate resolves them there) or pass a config with concrete values"
        )
    return config


def _unwrap(model: nn.Module) -> nn.Module:
    """The ``nn.Module`` inside a DeepSpeed engine (or the module itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def _upcast_partitions_(model: nn.Module) -> None:
    """Store the ZeRO-3 partitions of an already-partitioned model in fp32, in place.

    A model loaded with ``zero3_init_flag`` was partitioned by ``deepspeed.zero.Init`` in the policy's
    (bf16) dtype before we could choose; the checkpoint is bf16 anyway, so upcasting loses nothing.
    The empty placeholder ``param.data`` is retyped too: DeepSpeed sizes all-gather buffers from
    ``param.dtype`` and from ``ds_tensor.dtype``, which must agree. Floating buffers (rotary
    ``inv_freq``) were rounded to bf16 by ``zero.Init`` as well; they are left as they are, since the
    policy, loaded the same way, has the same rounded buffers.
    """
    params = [p for p in model.parameters() if hasattr(p, "ds_tensor") and p.ds_tensor.dtype != torch.float32]
    if not params:
        return
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    gathered = [p for p in params if p.ds_status == ZeroParamStatus.AVAILABLE]
    if gathered:
        gathered[0].partition(param_list=gathered)
    for p in params:
        p.ds_tensor.data = p.ds_tensor.data.float()
        p.data = torch.empty(0, dtype=torch.float32, device=p.data.device)


def prepare_frozen(
    model: nn.Module, accelerator_or_ds_config: Accelerator | Mapping[str, Any], *, fp32: bool = False
) -> nn.Module:
    """Wrap a frozen model (EMA teacher or KL reference) as a ZeRO-3 inference engine like the policy.

    Mirrors TRL's ``prepare_deepspeed`` (``trl/models/utils.py`` in huggingface/trl, itself adapted from
    accelerate): copy the policy's DeepSpeed config, keep stage 3 (else stage 0), drop the training
    sections, ``deepspeed.initialize(model=model, config=...)`` without an optimizer, ``eval()``. Two
    differences: TRL also sets ``"zero_optimization.reduce_bucket_size"``-style dotted keys, which
    DeepSpeed's config parser does not read (they are top-level keys), so we do not copy that; and
    ``fp32=True`` (see :func:`frozen_ds_config`) keeps the partitions in fp32 for the EMA teacher,
    upcasting them if ``zero3_init_flag`` already partitioned the model in bf16.

    Gradients are switched off: nothing backpropagates through either model, and with ``requires_grad``
    ZeRO-3 would set up gradient hooks for them. Run its forwards under ``torch.no_grad()``; every rank
    must run them (each forward all-gathers the layers' slices, a collective).

    ``accelerator_or_ds_config``: the policy's ``Accelerator`` (after ``prepare``) or a DeepSpeed config dict.
    """
    import deepspeed

    config = frozen_ds_config(accelerator_or_ds_config, fp32=fp32)
    model.requires_grad_(False)
    if fp32:
        if any(hasattr(p, "ds_tensor") for p in model.parameters()):
            _upcast_partitions_(model)
        else:
            model.float()
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def local_master_partition(param: nn.Parameter) -> torch.Tensor:
    """This rank's slice of a ZeRO-3 parameter at full precision (flat, 1-D).

    With bf16, ``param.ds_tensor`` is the bf16 copy the forward gathers; the optimizer's fp32 master slice
    (a view into ``fp32_partitioned_groups_flat`` in ``deepspeed/runtime/zero/stage3.py``) is what the
    update was applied to. ``deepspeed.utils.safe_get_local_fp32_param`` is DeepSpeed's supported reader
    for it (it also swaps NVMe-offloaded states in). It exists only for parameters the ZeRO-3 optimizer
    owns; for others (frozen, or a model without optimizer) ``ds_tensor`` is the only copy.
    """
    if not hasattr(param, "ds_tensor"):
        raise ValueError("not a ZeRO-3 partitioned parameter (no ds_tensor)")
    if param.requires_grad:
        from deepspeed.utils import safe_get_local_fp32_param

        try:
            master = safe_get_local_fp32_param(param)
        except AttributeError:  # no ``_z3_optimizer``: not owned by a ZeRO-3 optimizer
            master = None
        if master is not None:
            return master
    return param.ds_tensor


@torch.no_grad()
def ema_update_partitions(teacher: nn.Module, policy: nn.Module, a: float) -> None:
    """``teacher <- (1 - a) * teacher + a * policy`` on each rank's ZeRO-3 slices, without communication.

    Each teacher slice is lerped towards the policy's fp32 master slice (:func:`local_master_partition`),
    not towards its bf16 copy, so the teacher follows the weights the optimizer holds. This equals the EMA
    of the gathered full weights because both models were partitioned by the same world size: the slices
    of a parameter cover the same flat ranges (checked by ``numel``; padding of the last slice is lerped
    too and never read).

    ZeRO-3 keeps small parameters (below ``stage3_param_persistence_threshold``) gathered after their
    first forward and never re-gathers them, so the gathered copies of those are released and gathered
    again here, as DeepSpeed's own optimizer step does for the policy. That all-gather is a collective:
    call this on every rank.

    ``teacher``/``policy``: DeepSpeed engines or the modules inside them, with the same parameter names.
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"EMA weight a must be in [0, 1], got {a}")
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    teacher_params = dict(_unwrap(teacher).named_parameters())
    policy_params = dict(_unwrap(policy).named_parameters())
    if teacher_params.keys() != policy_params.keys():
        diff = sorted(teacher_params.keys() ^ policy_params.keys())
        raise ValueError(f"teacher and policy parameters differ: {diff[:5]}")
    refresh = []
    for name, t in teacher_params.items():
        if not hasattr(t, "ds_tensor"):
            raise ValueError(f"teacher parameter {name} is not ZeRO-3 partitioned")
        src = local_master_partition(policy_params[name])
        dst = t.ds_tensor
        if dst.numel() != src.numel():
            raise AssertionError(
                f"{name}: teacher slice has {dst.numel()} elements, policy slice {src.numel()}; both must be "
                "partitioned over the same ranks (same world size, same ZeRO-3 process group)"
            )
        dst.data.lerp_(src.detach().to(device=dst.device, dtype=dst.dtype).view_as(dst), a)
        if t.ds_status == ZeroParamStatus.AVAILABLE:
            refresh.append(t)
    if refresh:
        refresh[0].partition(param_list=refresh)
        refresh[0].all_gather(param_list=refresh)


@dataclass(frozen=True)
class MicroBatchPlan:
    """How to call ``accelerator.backward`` for micro-batch ``i`` of an update (see :func:`micro_batch_setup`)."""

    micro_batches_per_update: int
    loss_scale: float
    deepspeed: bool

    def is_last(self, micro_index: int) -> bool:
        return micro_index == self.micro_batches_per_update - 1

    def backward(self, accelerator: Accelerator, loss: torch.Tensor, micro_index: int) -> None:
        """Backward of one micro-batch; under DeepSpeed the last one also runs the optimizer step.

        ``sync_gradients`` is what accelerate's DeepSpeed wrapper passes to
        ``engine.set_gradient_accumulation_boundary`` and what makes it call ``engine.step()``.
        """
        if not 0 <= micro_index < self.micro_batches_per_update:
            raise IndexError(f"micro_index {micro_index} outside [0, {self.micro_batches_per_update})")
        accelerator.sync_gradients = self.is_last(micro_index)
        accelerator.backward(loss * self.loss_scale if self.loss_scale != 1.0 else loss)


def micro_batch_setup(
    accelerator: Accelerator, micro_batches_per_update: int, micro_batch_size: int | None = None
) -> MicroBatchPlan:
    """Make "one ``accelerator.backward`` per micro-batch, one optimizer step per update" exact under DeepSpeed.

    What accelerate and DeepSpeed do (accelerate 1.15 ``Accelerator.backward`` and
    ``utils/deepspeed.py::DeepSpeedEngineWrapper.backward``; DeepSpeed ``runtime/engine.py``):

    * ``accelerator.backward(loss)`` does not divide the loss under DeepSpeed (it does by
      ``accelerator.gradient_accumulation_steps`` otherwise); it calls
      ``engine.set_gradient_accumulation_boundary(accelerator.sync_gradients)``, then
      ``engine.backward(loss)``, then ``engine.step()`` if ``sync_gradients``. The wrapped optimizer's
      and scheduler's ``step``/``zero_grad`` are no-ops; ``engine.step()`` does clipping
      (``gradient_clipping``), the update, the scheduler step and zeroing, at the boundary only.
    * ``engine.backward`` divides the loss by the config's ``gradient_accumulation_steps`` (GAS).
    * ZeRO-3 reduce-scatters every micro-batch's gradient (averaged over ranks, as DDP) and adds it to
      this rank's gradient slice until the boundary, which the explicit flag decides; so DeepSpeed's
      own micro-step counter, and hence whether GAS equals the number of micro-batches, does not affect
      when the step happens. Only the 1/GAS factor does.

    So: ``sync_gradients`` must be False for all but the last micro-batch (else every micro-batch is an
    optimizer step) and each micro-batch loss must be multiplied by GAS. A loss normalised for DDP (our
    micro-batch losses are token sums over the update's token count, so they sum to the update's mean)
    then gives DeepSpeed the DDP gradient. We set ``gradient_accumulation_steps = micro_batches_per_update``
    (the factor is then ``micro_batches_per_update``) and ``train_micro_batch_size_per_gpu`` to the
    sequences per micro-batch per rank, so DeepSpeed's ``train_batch_size = micro * GAS * world`` (checked
    at ``initialize``, used for its sample counters and logs) is the update's batch. DeepSpeed never
    checks actual batch shapes against these, so micro-batches of varying size are fine; but every rank
    must run the same number of micro-batches (each forward and backward is a collective under ZeRO-3).

    Call before ``accelerator.prepare`` (the config is read there). Called after it, the engine's GAS is
    fixed and the plan's ``loss_scale`` is that GAS instead, which is still exact. Without DeepSpeed,
    nothing is changed and ``loss_scale`` undoes accelerate's own division (1 unless the accelerator was
    built with ``gradient_accumulation_steps``).

    ``accelerator.clip_grad_norm_`` under DeepSpeed only reports the engine's norm of the last step:
    call it after the last micro-batch's backward, clipping itself happens in ``engine.step()``.
    """
    from accelerate.utils import DistributedType

    if micro_batches_per_update < 1:
        raise ValueError(f"micro_batches_per_update must be >= 1, got {micro_batches_per_update}")
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return MicroBatchPlan(micro_batches_per_update, float(accelerator.gradient_accumulation_steps), False)
    engine = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if engine is not None:
        return MicroBatchPlan(
            micro_batches_per_update, float(engine.engine.gradient_accumulation_steps()), True
        )
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["gradient_accumulation_steps"] = micro_batches_per_update
    accelerator.gradient_accumulation_steps = micro_batches_per_update
    if micro_batch_size is not None:
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
    micro = config.get("train_micro_batch_size_per_gpu", "auto")
    if isinstance(micro, int):
        config["train_batch_size"] = micro * micro_batches_per_update * accelerator.num_processes
    else:
        config["train_batch_size"] = "auto"
    return MicroBatchPlan(micro_batches_per_update, float(micro_batches_per_update), True)
