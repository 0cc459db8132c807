"""What a rollout engine returns: plain data, no reward or training logic."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to sample. ``max_new_tokens`` bounds the response; ``temperature`` 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 3072
    seed: int | None = None


@dataclass
class Rollout:
    """One sampled response to one prompt.

    ``logprobs`` are the sampling policy's log-probabilities of ``response_ids`` (one per token), kept so
    the GRPO ratio has an "old" policy without a second forward pass when the engine can provide them.
    ``truncated`` is True when generation stopped at ``max_new_tokens`` rather than at EOS.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    logprobs: list[float] | None = None
    truncated: bool = False
    prompt_index: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_response_tokens(self) -> int:
        return len(self.response_ids)
