"""Load any causal LM and its tokenizer: hub id (for users), local directory, or ``builtin:`` name.

A directory holding a LoRA adapter in peft's format (or a checkpoint exported with
``model.lora.merge_on_export=false``, whose adapter is under ``adapter/``) loads as its base model with the
adapter merged in, so ``corewarding eval`` reads any training checkpoint."""

from __future__ import annotations

from pathlib import Path

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
    adapter = adapter_dir(path)
    if adapter is not None:
        model, base_name = _load_merged_adapter(adapter, torch_dtype)
        model.to(device)
        has_tokenizer = (Path(path) / "tokenizer_config.json").is_file()
        return model, load_tokenizer(name_or_path if has_tokenizer else base_name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as err:  # missing files / no config.json / not a causal LM
        raise ConfigError(f"model {name_or_path!r} could not be loaded ({err})") from err
    model.to(device)
    tokenizer = load_tokenizer(name_or_path)
    return model, tokenizer


def adapter_dir(path: str) -> Path | None:
    """The LoRA adapter (peft format) ``path`` holds instead of a full model: ``path`` itself, or the
    ``adapter/`` of a checkpoint exported with ``model.lora.merge_on_export=false``; None for a full model."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def _load_merged_adapter(adapter: Path, dtype: torch.dtype):
    """Base model (named by the adapter's config) + the adapter, merged into a plain transformers model."""
    import json

    from transformers import AutoModelForCausalLM

    from corewarding.training.lora import peft_quiet, require_peft

    peft = require_peft()
    base_name = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(f"LoRA adapter {adapter}: adapter_config.json names no base_model_name_or_path")
    try:
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), dtype=dtype)
        with peft_quiet():
            model = peft.PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"LoRA adapter {adapter} on base {base_name!r} could not be loaded ({err})"
        ) from err
    return model, base_name
