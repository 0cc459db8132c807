"""The word-problem generator: determinism, views that keep numbers and answer, correct worked solutions."""

from __future__ import annotations

import random
import re

import pytest

from corewarding.answers import extract_answer
from corewarding.microworld.problems import (
    OP_SYMBOLS,
    apply_op,
    generate_problems,
    numbers_in,
    solution_text,
)

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")
SYMBOL_OPS = {symbol: op for op, symbol in OP_SYMBOLS.items()}


@pytest.fixture(scope="module")
def problems():
    return generate_problems(300, seed=11)


def test_same_seed_same_problems_and_other_seed_differs():
    a = generate_problems(40, seed=5)
    b = generate_problems(40, seed=5)
    c = generate_problems(40, seed=6)
    assert a == b
    assert [p.key for p in a] != [p.key for p in c]


def test_problems_are_distinct_multi_step_and_in_range(problems):
    assert len({p.key for p in problems}) == len(problems)
    for p in problems:
        assert 2 <= len(p.steps) <= 3
        value = p.start
        for step in p.steps:
            value = apply_op(step.op, value, step.operand)
            assert value == step.result
            assert 1 <= value <= 50
        assert p.answer == value
    assert {op for p in problems for op in p.operations} == {"add", "sub", "mul", "div"}


def test_exact_division_only(problems):
    for p in problems:
        value = p.start
        for step in p.steps:
            if step.op == "div":
                assert value % step.operand == 0
            value = step.result


def test_views_keep_numbers_and_differ_in_wording(problems):
    for p in problems:
        assert len(p.rephrasings) == 2
        assert len(set(p.views)) == 3
        assert len(set(p.scenarios)) == 3  # every view tells another story
        for view in p.views:
            assert numbers_in(view) == list(p.numbers), view
            assert view.endswith("?")


def test_correct_solution_is_arithmetically_right_and_boxes_the_gold(problems):
    for p in problems:
        sol = p.solution
        assert sol.endswith(f"\\boxed{{{p.answer}}}.")
        assert extract_answer(sol) == str(p.answer)
        equations = EQUATION.findall(sol)
        assert len(equations) == len(p.steps)
        value = p.start
        for (a, symbol, b, c), step in zip(equations, p.steps, strict=True):
            assert int(a) == value and int(b) == step.operand and SYMBOL_OPS[symbol] == step.op
            assert int(c) == apply_op(step.op, int(a), int(b)) == step.result
            value = step.result


def test_corrupted_solutions_carry_one_mistake_to_varied_wrong_answers(problems):
    rng = random.Random(0)
    wrong_answers = []
    for p in problems:
        sol = solution_text(p, corrupt=True, rng=rng)
        answer = extract_answer(sol)
        assert answer is not None
        equations = EQUATION.findall(sol)
        assert len(equations) == len(p.steps)
        # the first equation that differs from the correct chain is where the mistake was made
        correct = EQUATION.findall(p.solution)
        assert equations != correct
        if answer != str(p.answer):
            wrong_answers.append(int(answer) - p.answer)
    # floor division can occasionally absorb a mistake; nearly all corruptions change the answer
    assert len(wrong_answers) >= 0.85 * len(problems)
    assert len(set(wrong_answers)) >= 15  # errors are spread, not one systematic offset


def test_unboxed_solutions_state_no_answer(problems):
    rng = random.Random(1)
    for p in problems[:100]:
        sol = solution_text(p, boxed=False, rng=rng)
        assert "\\boxed" not in sol
        assert extract_answer(sol) is None
        assert sol and p.solution.startswith(sol)


def test_corruption_needs_an_rng(problems):
    with pytest.raises(ValueError, match="rng"):
        solution_text(problems[0], corrupt=True)
    with pytest.raises(ValueError, match="rng"):
        solution_text(problems[0], boxed=False)


def test_exclude_keeps_problem_sets_disjoint(problems):
    keys = {p.key for p in problems}
    others = generate_problems(300, seed=11, exclude=keys)
    assert not keys & {p.key for p in others}
