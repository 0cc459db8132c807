"""Fixtures for the evaluation tests: a tiny real model built from a config, and a scripted engine."""

from __future__ import annotations

import pytest

from corewarding.rollout.types import Rollout


class ScriptedEngine:
    """A ``RolloutEngine`` that answers each question (by its user text) with scripted completions.

    Completions are handed out in order per question, so every metric can be computed by hand while
    extraction, equivalence and voting stay the real answer engine. ``calls`` logs (user texts, n, seed).
    """

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.cursor = dict.fromkeys(script, 0)
        self.calls: list[tuple[list[str], int, int | None]] = []

    def generate(self, prompts, n, sampling):
        users = [next(m["content"] for m in p if m["role"] == "user") for p in prompts]
        self.calls.append((users, n, sampling.seed))
        out = []
        for i, user in enumerate(users):
            for _ in range(n):
                text = self.script[user][self.cursor[user] % len(self.script[user])]
                self.cursor[user] += 1
                out.append(
                    Rollout(prompt_ids=[1, 2], response_ids=[3] * len(text), text=text, prompt_index=i)
                )
        return out

    def sync_weights(self, model):
        pass


@pytest.fixture
def scripted_engine_class():
    return ScriptedEngine


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, shared_data):
    """A random tiny Qwen3 with a BPE tokenizer trained on MATH-500 questions and a ChatML template."""
    from corewarding.data import SYSTEM_PROMPT, load_questions
    from corewarding.models.tiny import build_tiny_model

    texts = [q.question for q in load_questions(shared_data / "benchmarks" / "math500.jsonl")]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), [*texts, SYSTEM_PROMPT], vocab_size=512)
