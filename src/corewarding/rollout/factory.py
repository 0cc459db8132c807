"""Pick a rollout engine by name (``hf`` or ``vllm``) for a model the caller already holds."""

from __future__ import annotations

from corewarding.errors import ConfigError
from corewarding.rollout.engine import RolloutEngine


def make_engine(
    kind: str, model, tokenizer, *, batch_size: int = 64, max_prompt_length: int | None = None
) -> RolloutEngine:
    """``hf`` samples with the given module itself; ``vllm`` builds a vLLM engine and syncs its weights."""
    if kind == "hf":
        from corewarding.rollout.hf_engine import HFRolloutEngine

        return HFRolloutEngine(model, tokenizer, batch_size=batch_size, max_prompt_length=max_prompt_length)
    if kind == "vllm":
        from corewarding.rollout.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine.for_model(model, tokenizer, max_prompt_length=max_prompt_length)
        return engine
    raise ConfigError(f"rollout.engine={kind!r}: expected hf or vllm")
