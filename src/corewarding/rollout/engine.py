"""The rollout-engine interface: prompts in, sampled responses out.

The trainer, the evaluator, the rephraser and ``solve`` all talk to an engine through this interface only,
so a faster backend (vLLM) drops in without touching them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from corewarding.rollout.types import Rollout, SamplingParams


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates ``n`` responses for each prompt.

    ``prompts`` are chat message lists (rendered with the tokenizer's chat template, or a plain prompt
    when the tokenizer has none). The result has ``len(prompts) * n`` rollouts, grouped by prompt:
    rollouts ``[i*n:(i+1)*n]`` answer ``prompts[i]`` and carry ``prompt_index == i``.
    """

    def generate(
        self, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]: ...

    def sync_weights(self, model) -> None:
        """Make the engine sample from ``model``'s current weights (after an optimizer step)."""
        ...
