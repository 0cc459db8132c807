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

    An engine may also offer ``release_memory() -> None`` (optional, so not part of this protocol's
    ``isinstance`` check; call it through ``getattr``): give the engine's GPU memory back before the
    policy update. The vLLM engine sleeps (vLLM's sleep mode) and may discard its weights, so the caller
    must ``sync_weights`` before the next ``generate`` (which raises otherwise); an engine that shares
    the trainer's module has nothing to release and makes it a no-op.
    """

    def generate(
        self, prompts: list[list[dict[str, str]]], n: int, sampling: SamplingParams
    ) -> list[Rollout]: ...

    def sync_weights(self, model) -> None:
        """Make the engine sample from ``model``'s current weights.

        Called after every optimizer step and after a resume, and with another module to sample it
        through the same engine (Co-rewarding-II's teacher: sync the teacher, generate, sync the policy).
        ``model`` may be wrapped (``.module``) or FSDP2-sharded; a sharded sync gathers parameters, a
        collective, so every process calls it at the same point with the same module.
        """
        ...
