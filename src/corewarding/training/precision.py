"""Storage and compute precision: fp32 master weights, bf16 arithmetic.

AdamW's update at the paper's lr 3e-6 is about 3e-6 of a weight, far below bf16's resolution (about 4e-3
relative): a policy *stored* in bf16 rounds most updates away (measured on CPU: 10 steps changed 3.7% of the
weights and none of the norm weights). So trainable weights and the optimizer state are kept in fp32, and
only the forward and backward passes run in bf16 (autocast, or FSDP2's all-gather dtype), as verl does.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from corewarding.errors import ConfigError
from corewarding.models.loading import resolve_dtype

LOW_PRECISION = (torch.bfloat16, torch.float16)


def storage_dtype(name: str) -> torch.dtype:
    """The dtype trainable weights are kept in: fp32 unless asked otherwise (``auto`` means fp32 here).

    16-bit storage is allowed but warned about loudly: at RL learning rates most updates are lost.
    """
    dtype = torch.float32 if name == "auto" else resolve_dtype(name, "cpu")
    if dtype in LOW_PRECISION:
        warnings.warn(
            f"model.dtype={name}: the policy's trainable weights and AdamW state will be stored in {dtype}. "
            "At RL learning rates (the paper's 3e-6) most updates are smaller than 16-bit resolution and "
            "round away, so the model barely trains. Keep model.dtype=float32 and set "
            "model.compute_dtype=bf16 for bf16 speed.",
            UserWarning,
            stacklevel=2,
        )
    return dtype


def compute_dtype(name: str, device: torch.device, launch_mixed_precision: str | None = None) -> torch.dtype:
    """The dtype forward and backward passes run in.

    ``auto``: the accelerate launch's ``mixed_precision`` when it says bf16, else bf16 on a GPU that
    supports it, else fp32 (a CPU). fp16 is refused: it needs loss scaling, which this trainer does not do.
    """
    if name == "auto":
        if launch_mixed_precision == "bf16":
            return torch.bfloat16
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dtype = resolve_dtype(name, device)
    if dtype == torch.float16:
        raise ConfigError(
            f"model.compute_dtype={name}: fp16 compute needs loss scaling, which corewarding does not do; "
            "use bf16 (or float32)"
        )
    return dtype


def autocast(device: torch.device, compute: torch.dtype, storage: torch.dtype):
    """Autocast to ``compute`` when it is narrower than the weights' ``storage`` dtype, else a no-op."""
    if compute == storage or compute == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute)
