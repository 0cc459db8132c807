"""Co-rewarding-II's teacher: a slowly-moving EMA copy of the policy whose majority answers reward it.

Because the teacher lags the policy, the policy cannot immediately move its own pseudo-labels towards
whatever it currently prefers (the collapse mode of self-rewarding). The mixing weight follows a cosine
schedule from ``a_start`` down to ``a_end``: the teacher tracks the policy faster early, then settles.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from corewarding.errors import ConfigError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def ema_coefficient(step: int, total_steps: int, a_start: float = 0.01, a_end: float = 0.0001) -> float:
    """Cosine-annealed EMA weight a(t) = a_end + ½(a_start − a_end)(1 + cos(π·t/T)).

    a(0) = a_start, a(T/2) = the midpoint, a(T) = a_end; ``step`` outside [0, T] is clamped.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    t = min(max(step, 0), total_steps)
    return a_end + 0.5 * (a_start - a_end) * (1.0 + math.cos(math.pi * t / total_steps))


def _set_schedule(teacher, ema_enabled: bool, update_interval: int, a_start: float, a_end: float) -> None:
    """Validate and store the EMA schedule settings both teacher kinds share."""
    if not isinstance(update_interval, int) or isinstance(update_interval, bool) or update_interval < 1:
        raise ConfigError(f"teacher.update_interval must be an integer >= 1, got {update_interval!r}")
    for key, value in (("a_start", a_start), ("a_end", a_end)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"teacher.{key} must be in [0, 1], got {value!r}")
    teacher.ema_enabled = bool(ema_enabled)
    teacher.update_interval = update_interval
    teacher.a_start = float(a_start)
    teacher.a_end = float(a_end)


class EMATeacher:
    """A frozen copy of the policy, updated in place as teacher ← (1 − a)·teacher + a·policy.

    ``update`` takes the *unwrapped* policy (``accelerator.unwrap_model(model)``); parameter and buffer names
    must match the teacher's. Both may be FSDP2-sharded or ZeRO-3-partitioned alike: the update then runs on
    each process's own shards, with no full copy of either model. Floating buffers are averaged like
    parameters; integer buffers (e.g. counters) are copied. With ``ema_enabled=False`` the teacher stays the
    initial policy forever (the paper's frozen-teacher ablation).

    Precision: with a ≈ 1e-4 a bf16/fp16 teacher cannot represent the per-step change (bf16 resolves about
    4e-3 relative), so its weights would stop moving; keep the teacher in float32 (``dtype=torch.float32``)
    when the policy itself is held in 16-bit. A warning says so.
    """

    def __init__(
        self,
        policy: nn.Module,
        ema_enabled: bool = True,
        update_interval: int = 1,
        a_start: float = 0.01,
        a_end: float = 0.0001,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        model: nn.Module | None = None,
    ) -> None:
        _set_schedule(self, ema_enabled, update_interval, a_start, a_end)
        # ``model``: a copy of the policy built by the caller (under ZeRO-3 it is loaded already partitioned,
        # which a deepcopy of the partitioned policy would not be)
        self.model = model if model is not None else copy.deepcopy(policy)
        if dtype is not None or device is not None:
            self.model.to(device=device, dtype=dtype)
        self.model.eval()
        self.model.requires_grad_(False)
        self.last_a: float | None = None
        self.num_updates = 0
        if self.ema_enabled and any(p.dtype in _LOW_PRECISION for p in self.model.parameters()):
            warnings.warn(
                "EMA teacher parameters are 16-bit: updates of weight a≈1e-4 round away and the teacher will "
                "barely move; pass dtype=torch.float32 to keep an fp32 teacher",
                stacklevel=2,
            )

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The module that runs as the teacher, for one block (a separate copy: itself, as it is)."""
        yield self.model

    def _paired(self, policy: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(teacher tensor, policy tensor) for every parameter and buffer, matched by name."""
        pairs = []
        for kind, teacher_items, policy_items in (
            ("parameters", self.model.named_parameters(), policy.named_parameters()),
            ("buffers", self.model.named_buffers(), policy.named_buffers()),
        ):
            mine, theirs = dict(teacher_items), dict(policy_items)
            if mine.keys() != theirs.keys():
                extra = sorted(theirs.keys() - mine.keys())[:3]
                missing = sorted(mine.keys() - theirs.keys())[:3]
                raise ValueError(
                    f"EMA teacher: policy {kind} do not match the teacher's (policy-only {extra}, missing "
                    f"{missing}); pass the unwrapped policy (accelerator.unwrap_model)"
                )
            for name, t in mine.items():
                p = theirs[name]
                if t.shape != p.shape:
                    raise ValueError(
                        f"EMA teacher: {name} has shape {tuple(p.shape)} in the policy but {tuple(t.shape)} in "
                        "the teacher (sharded parameters must be gathered before the update)"
                    )
                pairs.append((t, p))
        return pairs

    @torch.no_grad()
    def update(self, policy: nn.Module, step: int, total_steps: int) -> bool:
        """Blend ``policy`` into the teacher if EMA is on and ``step % update_interval == 0``.

        Returns whether the teacher changed. ``last_a`` is the weight used (0.0 while frozen), for logging.
        """
        if not self.ema_enabled:
            self.last_a = 0.0
            return False
        if step % self.update_interval != 0:
            return False
        from corewarding.training.sharding import is_zero3, local_tensor

        a = ema_coefficient(step, total_steps, self.a_start, self.a_end)
        if is_zero3(self.model):
            from corewarding.training.zero3 import ema_update_partitions

            # ZeRO-3 slices, towards the optimizer's fp32 master slices (a collective: every process)
            ema_update_partitions(self.model, policy, a)
            self.last_a = a
            self.num_updates += 1
            return True
        for teacher_param, policy_param in self._paired(policy):
            # shard by shard: under FSDP2 both are DTensors sharded alike, so each process blends only its
            # own shard, in the teacher's fp32, and no full copy of either model is ever made
            t = local_tensor(teacher_param)
            src = local_tensor(policy_param).detach().to(device=t.device, dtype=t.dtype)
            if t.shape != src.shape:
                raise ValueError(
                    f"EMA teacher: local shards differ ({tuple(t.shape)} vs {tuple(src.shape)}); the teacher "
                    "must be sharded exactly like the policy"
                )
            if t.is_floating_point():
                t.lerp_(src, a)  # t + a·(p − t) = (1 − a)·t + a·p
            else:
                t.copy_(src)
        self.last_a = a
        self.num_updates += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Teacher weights and schedule state, for checkpoints (resume continues the same EMA)."""
        return {
            "model": self.model.state_dict(),
            "last_a": self.last_a,
            "num_updates": self.num_updates,
            "ema_enabled": self.ema_enabled,
            "update_interval": self.update_interval,
            "a_start": self.a_start,
            "a_end": self.a_end,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights and counters; the schedule settings come from the current config, not the file."""
        self.model.load_state_dict(state["model"])
        self.last_a = state.get("last_a")
        self.num_updates = int(state.get("num_updates", 0))


class AdapterEMATeacher:
    """Co-rewarding-II's teacher when the policy trains LoRA adapters (``model.lora.r > 0``).

    No copy of the model: the teacher is the policy's own peft module run with other adapter weights.

    * EMA on: a second adapter, ``teacher``, on the same base, created equal to the policy's adapter and
      held in fp32 (a ≈ 1e-4 updates). ``update`` blends only adapter tensors, teacher ← (1 − a)·teacher +
      a·policy, over ``A`` and ``B`` separately (the teacher is base + EMA adapter).
    * EMA off (``teacher.ema=false``): the frozen teacher is the initial policy, which is the base with the
      adapters disabled (the policy's adapter starts with ``B = 0``); there is no teacher adapter at all.

    ``active()`` makes the module run as the teacher for one block (the teacher's adapter active, or the
    adapters disabled) and restores the policy's adapter afterwards: the teacher's rollouts, its scoring
    and its use as the KL reference all go through it. ``model`` is the shared peft module.
    """

    def __init__(
        self,
        policy: nn.Module,
        ema_enabled: bool = True,
        update_interval: int = 1,
        a_start: float = 0.01,
        a_end: float = 0.0001,
    ) -> None:
        from corewarding.training import lora

        _set_schedule(self, ema_enabled, update_interval, a_start, a_end)
        self.model = policy
        self.adapter: str | None = lora.TEACHER if self.ema_enabled else None  # None: adapters disabled
        if self.ema_enabled:
            lora.add_teacher_adapter(policy, dtype=torch.float32)
        self.last_a: float | None = None
        self.num_updates = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The shared module running as the teacher (no-grad use: the policy adapter is frozen inside)."""
        from corewarding.training import lora

        with lora.adapter_active(self.model, self.adapter):
            yield self.model

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from corewarding.training import lora

        return lora.adapter_pairs(self.model)

    @torch.no_grad()
    def update(self, policy: nn.Module, step: int, total_steps: int) -> bool:
        """Blend the policy's adapter into the teacher's (see :meth:`EMATeacher.update`)."""
        if not self.ema_enabled:
            self.last_a = 0.0
            return False
        if step % self.update_interval != 0:
            return False
        if policy is not self.model:
            raise ValueError("the LoRA teacher averages the adapters of the peft module it was built on")
        a = ema_coefficient(step, total_steps, self.a_start, self.a_end)
        for teacher, src in self._pairs():
            teacher.lerp_(src.detach().to(teacher.dtype), a)
        self.last_a = a
        self.num_updates += 1
        return True

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The teacher adapter's tensors by parameter name (empty for the frozen teacher)."""
        from corewarding.training import lora

        if self.adapter is None:
            return {}
        return {n: p.detach() for n, p in lora.adapter_parameters(self.model, self.adapter)}

    def load_adapter_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        from corewarding.training import lora

        if self.adapter is None:
            return
        names = [n for n, _ in lora.adapter_parameters(self.model, self.adapter)]
        lora.load_named(self.model, state, names, source)
