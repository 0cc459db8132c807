"""Scoring and sampling logic of ``corewarding.evaluation.evaluate`` on scripted completions.

The engine here is a scripted ``RolloutEngine`` (conftest.py): it returns chosen solution texts so every
metric can be computed by hand, while extraction, equivalence and voting are the real answer engine.
"""

from __future__ import annotations

import pytest

from corewarding.data.question import Question
from corewarding.evaluation.evaluate import evaluate, generate_completions, score_completions
from corewarding.rollout.types import SamplingParams

QUESTIONS = [
    Question.from_text("half", "What is 1/2 as a fraction?", gold="\\frac{1}{2}"),
    Question.from_text("amc", "An AMC question.", gold="142.0"),
    Question.from_text("six", "What is 2+4?", gold="6"),
]
SCRIPT = {
    "What is 1/2 as a fraction?": [
        "So it is \\boxed{0.5}.",
        "We get \\boxed{\\dfrac12}",
        "Hence \\boxed{3}.",
        "I am not sure.",
    ],
    "An AMC question.": ["\\boxed{141}", "so \\boxed{141}", "The answer is 141", "Thus \\boxed{142}."],
    "What is 2+4?": ["\\boxed{6}", "\\boxed{6.0}", "#### 6", "The answer is $6$."],
}


def test_scripted_engine_keeps_the_engine_contract(scripted_engine_class):
    """What the tests below rely on, as ``RolloutEngine`` states it: ``n`` rollouts per prompt, grouped by
    prompt in order with ``prompt_index``, and the script handed out in order across calls (wrapping)."""
    engine = scripted_engine_class(SCRIPT)
    half, amc = SCRIPT["What is 1/2 as a fraction?"], SCRIPT["An AMC question."]
    out = engine.generate([QUESTIONS[1].messages, QUESTIONS[0].messages], 3, SamplingParams(seed=4))
    assert [(r.prompt_index, r.text) for r in out] == [(0, t) for t in amc[:3]] + [(1, t) for t in half[:3]]
    assert all(r.num_response_tokens == len(r.text) and not r.truncated for r in out)
    again = engine.generate([QUESTIONS[0].messages], 2, SamplingParams(seed=5))
    assert [(r.prompt_index, r.text) for r in again] == [(0, half[3]), (0, half[0])]
    assert engine.calls == [
        (["An AMC question.", "What is 1/2 as a fraction?"], 3, 4),
        (["What is 1/2 as a fraction?"], 2, 5),
    ]
    assert engine.generate([], 4, SamplingParams()) == []


def test_metrics_on_scripted_completions_with_equivalent_forms(scripted_engine_class):
    Scripted = scripted_engine_class
    engine = Scripted(SCRIPT)
    result = evaluate(engine, QUESTIONS, 4, SamplingParams(seed=7), progress=False)
    by_q = {}
    for c in result.completions:
        by_q.setdefault(c.question_id, []).append(c)
    assert [c.correct for c in by_q["half"]] == [True, True, False, False]  # 0.5 and \dfrac12 equal 1/2
    assert [c.correct for c in by_q["amc"]] == [False, False, False, True]  # 142 equals "142.0"
    assert [c.correct for c in by_q["six"]] == [True] * 4  # 6.0, "#### 6" and "$6$" all equal 6
    assert by_q["half"][3].answer is None
    assert result.majority["half"] == ("0.5", 2)  # 0.5 and \dfrac12 form one class of two
    assert result.majority["amc"] == ("141", 3)
    assert result.majority["six"][1] == 4

    m = result.metrics
    assert m["avg@4"] == pytest.approx((2 / 4 + 1 / 4 + 4 / 4) / 3)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["maj@4"] == pytest.approx(2 / 3)
    assert m["no_answer_frac"] == pytest.approx(1 / 12)
    assert m["questions"] == 3

    scored = score_completions(QUESTIONS, result.completions, k=4, extra_pass_ks=[1, 2])
    # pass@2 per question: 1 - C(4-c, 2)/C(4, 2) with c = 2, 1, 4
    assert scored.metrics["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert scored.metrics["pass@1"] == pytest.approx(m["avg@4"])


def test_questions_without_gold_are_voted_but_not_scored(scripted_engine_class):
    Scripted = scripted_engine_class
    q = Question.from_text("nogold", "What is 2+4?")
    result = evaluate(Scripted(SCRIPT), [q, QUESTIONS[0]], 4, SamplingParams(), progress=False)
    assert result.metrics["questions"] == 1
    assert result.majority["nogold"][1] == 4
    assert all(c.correct is None for c in result.completions if c.question_id == "nogold")


def test_generate_completions_samples_only_what_is_missing(scripted_engine_class):
    Scripted = scripted_engine_class
    engine = Scripted(SCRIPT)
    have = {"half": [0, 1], "six": [0, 1, 2, 3]}
    chunks = []
    new = generate_completions(
        engine, QUESTIONS, 4, SamplingParams(seed=3), have=have, progress=False, on_chunk=chunks.append
    )
    # "six" is complete; "half" lacks 2 samples and "amc" lacks 4: two calls, one per missing count
    asked = sorted((users, n) for users, n, _ in engine.calls)
    assert asked == [(["An AMC question."], 4), (["What is 1/2 as a fraction?"], 2)]
    got = sorted((c.question_id, c.sample_index) for c in new)
    assert got == [("amc", 0), ("amc", 1), ("amc", 2), ("amc", 3), ("half", 2), ("half", 3)]
    assert sum(len(c) for c in chunks) == len(new)


def test_chunk_seeds_differ_between_calls_and_resumed_ranges(scripted_engine_class):
    Scripted = scripted_engine_class
    engine = Scripted(SCRIPT)
    generate_completions(engine, QUESTIONS, 2, SamplingParams(seed=5), chunk_questions=1, progress=False)
    first = [seed for _, _, seed in engine.calls]
    assert len(first) == 3 and len(set(first)) == 3
    engine.calls.clear()
    have = {q.id: [0, 1] for q in QUESTIONS}  # extend n=2 to n=4: indices 2..3 must not reuse a seed
    generate_completions(
        engine, QUESTIONS, 4, SamplingParams(seed=5), have=have, chunk_questions=1, progress=False
    )
    assert not set(first) & {seed for _, _, seed in engine.calls}
    engine.calls.clear()
    generate_completions(engine, QUESTIONS, 2, SamplingParams(seed=None), progress=False)
    assert [seed for _, _, seed in engine.calls] == [None]


def test_engine_returning_wrong_count_is_an_error(scripted_engine_class):
    Scripted = scripted_engine_class

    class Short(Scripted):
        def generate(self, prompts, n, sampling):
            return super().generate(prompts, n, sampling)[:-1]

    with pytest.raises(RuntimeError, match="rollouts"):
        generate_completions(Short(SCRIPT), QUESTIONS, 2, SamplingParams(), progress=False)


def test_boxed_extraction_reads_only_the_last_box(scripted_engine_class):
    """``extraction="boxed"`` (the paper's rule, a paper-mode run's validation): a completion without a
    ``\\boxed{}`` has no answer, so it is wrong and casts no vote, where the lenient rule reads it."""
    Scripted = scripted_engine_class
    script = {"What is 2+4?": ["\\boxed{6}", "The answer is 6.", "#### 6", "\\boxed{7} and \\boxed{7}"]}
    q = QUESTIONS[2]
    comps = generate_completions(Scripted(script), [q], 4, SamplingParams(seed=1), progress=False)

    lenient = score_completions([q], comps, k=4)
    assert [c.answer for c in lenient.completions] == ["6", "6", "6", "7"]
    assert lenient.metrics["avg@4"] == pytest.approx(3 / 4) and lenient.metrics["maj@4"] == 1.0
    assert lenient.metrics["no_answer_frac"] == 0.0

    boxed = score_completions([q], comps, k=4, extraction="boxed", exact_vote=True)
    assert [c.answer for c in boxed.completions] == ["6", None, None, "7"]
    assert [c.correct for c in boxed.completions] == [True, False, False, False]
    assert boxed.metrics["avg@4"] == pytest.approx(1 / 4) and boxed.metrics["no_answer_frac"] == 0.5
    assert boxed.majority["six"] in (("6", 1), ("7", 1))  # one vote each: the unboxed two do not vote

    with pytest.raises(ValueError, match="extraction"):
        score_completions([q], comps, k=4, extraction="strict")
    via_evaluate = evaluate(
        Scripted(script), [q], 4, SamplingParams(seed=1), progress=False, extraction="boxed"
    )
    assert via_evaluate.metrics["avg@4"] == pytest.approx(1 / 4)
