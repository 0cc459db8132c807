"""Passing a KV cache back into a model's forward, across transformers 5 versions."""

from __future__ import annotations

import functools
import inspect

import torch


def cache_keyword(model) -> str:
    """``cache`` where the model's forward takes it (recent transformers 5), else ``past_key_values``.

    Recent versions renamed the argument and warn on the old name; older 5.x releases only know the old
    one. DDP wraps the model (its ``module`` is the real one); FSDP2 and DeepSpeed keep its forward; a peft
    model forwards its keyword arguments to the transformers model it wraps (``get_base_model()``).
    """
    inner = getattr(model, "module", model)
    base = getattr(inner, "get_base_model", None)
    if callable(base):
        inner = base()
    return _keyword_of(type(inner))


@functools.cache
def _keyword_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned: ``output.cache`` in recent transformers 5 (where reading
    ``past_key_values`` warns), ``output.past_key_values`` in older ones."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


def is_plain_cache(cache, rows: int | None = None) -> bool:
    """A ``DynamicCache`` of plain per-layer key/value tensors (``rows`` of them, when given): the only
    kind whose rows can be copied to other rows or dropped. Sliding-window, hybrid, recurrent and
    quantized caches are not, and the callers fall back to running whole sequences."""
    layers = getattr(cache, "layers", None)
    if type(cache).__name__ != "DynamicCache" or not layers:
        return False
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer":
            return False
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)):
            return False
        if rows is not None and keys.shape[0] != rows:
            return False
    return True
