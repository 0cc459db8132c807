"""The one record type every loader produces and every consumer reads.

Training sets, benchmarks, rephrased views and the micro-world all become ``Question`` objects, so the
trainer, the evaluator and the rephraser never special-case where a question came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SYSTEM_PROMPT = "Let's think step by step and output the final answer within \\boxed{}."


@dataclass
class Question:
    """One math question.

    ``question`` is the user text alone; ``messages`` is the chat form that is rendered into a prompt
    (system prompt included). ``gold`` is the ground-truth answer string, or ``None`` when unknown; it is
    only ever used for metrics and the ``gt`` baseline, never by a self-supervised reward.
    """

    id: str
    question: str
    messages: list[dict[str, str]]
    gold: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(
        cls,
        id: str,
        question: str,
        gold: str | None = None,
        source: str = "",
        system_prompt: str | None = SYSTEM_PROMPT,
        extra: dict[str, Any] | None = None,
    ) -> Question:
        """Build a question with the standard chat form (system prompt + user question)."""
        messages = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": question})
        return cls(id=id, question=question, messages=messages, gold=gold, source=source, extra=extra or {})
