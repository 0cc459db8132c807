"""Passing a KV cache back into a model's forward, across transformers 5 versions."""

from __future__ import annotations

import functools
import inspect


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
