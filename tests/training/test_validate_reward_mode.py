"""``Trainer.validate`` reads validation answers by the run's reward rules (``reward.extraction``).

A paper-mode run (``extraction=boxed``) validates as the paper does: an unboxed completion has no answer.
The method runs on a stand-in trainer (config, single-process accelerator, scripted engine), so what is
tested is validate's own wiring, with the real sampling and scoring functions underneath.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from corewarding.config import load_config
from corewarding.data.question import Question
from corewarding.rollout.types import Rollout
from corewarding.training.trainer import Trainer

COMPLETIONS = ["\\boxed{6}", "The answer is 6.", "#### 6", "6 - 0 = 6."]


class Scripted:
    def generate(self, prompts, n, sampling):
        return [
            Rollout(
                prompt_ids=[1], response_ids=[2, 3], text=COMPLETIONS[k % len(COMPLETIONS)], prompt_index=i
            )
            for i in range(len(prompts))
            for k in range(n)
        ]


def _stand_in(*overrides: str) -> SimpleNamespace:
    required = ["method=majority_vote", "model.name_or_path=unused", "data.train=unused"]
    cfg = load_config(None, [*required, "validation.n=4", *overrides])

    @contextmanager
    def engine_on(role):
        assert role == "policy"
        yield Scripted()

    return SimpleNamespace(
        cfg=cfg,
        accelerator=SimpleNamespace(process_index=0, num_processes=1),
        val_questions=[Question.from_text("six", "What is 2+4?", gold="6")],
        _engine_on=engine_on,
    )


@pytest.mark.parametrize(
    ("overrides", "accuracy", "no_answer"),
    [
        ((), 3 / 4, 1 / 4),  # lenient (the default): the box, "The answer is 6" and "#### 6"
        (("reward.extraction=boxed", "reward.exact_vote=true", "reward.gt_grader=string"), 1 / 4, 3 / 4),
    ],
    ids=["improved", "paper"],
)
def test_validation_reads_answers_by_the_reward_extraction(overrides, accuracy, no_answer):
    metrics = Trainer.validate(_stand_in(*overrides))
    assert metrics["val/avg@4"] == pytest.approx(accuracy)
    assert metrics["val/no_answer_frac"] == pytest.approx(no_answer)
    assert metrics["val/maj@4"] == 1.0  # "6" wins the vote either way (3 lenient votes, 1 boxed one)
