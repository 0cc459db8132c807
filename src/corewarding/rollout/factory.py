"""Pick a rollout engine by name (``hf`` or ``vllm``) for a model the caller already holds."""

from __future__ import annotations

from corewarding.errors import ConfigError
from corewarding.rollout.engine import RolloutEngine


def make_engine(
    kind: str,
    model,
    tokenizer,
    *,
    batch_size: int = 64,
    max_prompt_length: int | None = None,
    gpu_memory_utilization: float = 0.4,
    sleep_between_steps: bool = True,
    seed: int = 0,
    max_model_len: int | None = None,
) -> RolloutEngine:
    """``hf`` samples with the given module itself; ``vllm`` builds a colocated vLLM engine and syncs it.

    ``gpu_memory_utilization`` (vLLM's share of the GPU), ``sleep_between_steps`` (vLLM's sleep mode, so
    ``release_memory`` frees its memory during the policy update), ``seed`` (vLLM's sampler seed; give each
    process its own in a multi-process run) and ``max_model_len`` are vLLM-only: the transformers engine
    shares the policy module and its memory, so it ignores them. ``batch_size`` is transformers-only (vLLM
    schedules its own batches).
    """
    if kind == "hf":
        from corewarding.rollout.hf_engine import HFRolloutEngine

        return HFRolloutEngine(model, tokenizer, batch_size=batch_size, max_prompt_length=max_prompt_length)
    if kind == "vllm":
        from corewarding.rollout.vllm_engine import VLLMRolloutEngine

        return VLLMRolloutEngine.for_model(
            model,
            tokenizer,
            max_prompt_length=max_prompt_length,
            gpu_memory_utilization=gpu_memory_utilization,
            sleep_between_steps=sleep_between_steps,
            seed=seed,
            max_model_len=max_model_len,
        )
    raise ConfigError(f"rollout.engine={kind!r}: expected hf or vllm")
