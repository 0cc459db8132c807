"""Load any causal LM and its tokenizer: hub id (for users), local directory, or ``builtin:`` name."""

from __future__ import annotations

import torch

from corewarding.errors import ConfigError
from corewarding.models.builtin import resolve_model_path

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None) -> torch.dtype:
    """``auto``/None → bf16 on a GPU that supports it, fp32 on CPU; strings like ``bf16`` accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else None
        on_gpu = dev is not None and dev.type == "cuda"
        if on_gpu and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(
            f"model.dtype: unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)} or 'auto'"
        )
    return _DTYPES[dtype]


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"tokenizer of model {name_or_path!r} could not be loaded ({err})") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(
    name_or_path: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
):
    """Return ``(model, tokenizer)``; the model is on ``device`` in ``dtype`` (see :func:`resolve_dtype`)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(
            f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps ...)"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available")
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as err:  # missing files / no config.json / not a causal LM
        raise ConfigError(f"model {name_or_path!r} could not be loaded ({err})") from err
    model.to(device)
    tokenizer = load_tokenizer(name_or_path)
    return model, tokenizer
