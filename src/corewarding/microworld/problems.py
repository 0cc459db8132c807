"""Multi-step arithmetic word problems: the micro-world's closed, fully known task.

Why a synthetic task: no model can be downloaded on an offline CPU machine, yet the whole Co-rewarding
method (cross-view majority voting, EMA teacher, GRPO) must be seen to work. A problem here is a start
value and a chain of two or more integer operations (add, subtract, multiply, exact divide) told as a
story. Each problem has:

* an original wording and several rephrasings that keep every number, the order of operations and the
  answer but change the scenario, the person and the sentence forms (the Co-rewarding-I views);
* a worked chain-of-thought solution ending in ``\\boxed{answer}``, and on request a *corrupted* one (a
  wrong intermediate result or operand carried through to a wrong final answer) or one without a box,
  which is what makes the pretrained base model imperfect in the way base LLMs are.

Everything is driven by a ``random.Random`` seeded by the caller, so a seed names one world exactly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

OPERATIONS = ("add", "sub", "mul", "div")
OP_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class Scenario:
    """One story setting: the templates for the start, each operation and the question.

    Templates use ``{name}``, ``{n}`` and the pronoun fields of ``PRONOUNS``. Operation templates start
    with a pronoun or a common noun (never the name) so a connector like "Then" can be put in front.
    Templates never contain digits other than ``{n}``, so a question's numbers are exactly its operands.
    """

    key: str
    start: tuple[str, ...]
    add: tuple[str, ...]
    sub: tuple[str, ...]
    mul: tuple[str, ...]
    div: tuple[str, ...]
    question: tuple[str, ...]

    def templates(self, part: str) -> tuple[str, ...]:
        return getattr(self, part)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="apples",
        start=("{name} has {n} apples.", "{name} picks {n} apples."),
        add=("{He} picks {n} more.", "{He} buys {n} more apples."),
        sub=("{He} eats {n} apples.", "{He} gives away {n}."),
        mul=("{He} trades them for {n} times as many.",),
        div=("{He} splits them into {n} equal bags and keeps one.",),
        question=("How many apples does {he} have now?", "How many apples are left?"),
    ),
    Scenario(
        key="coins",
        start=("{name} has {n} coins.", "{name} saves {n} coins."),
        add=("{He} earns {n} more.", "{He} finds {n} coins."),
        sub=("{He} spends {n} coins.", "{He} loses {n}."),
        mul=("{His} savings grow to {n} times as many.",),
        div=("{He} splits them into {n} equal piles and keeps one.",),
        question=("How many coins does {he} have now?", "How many coins are left?"),
    ),
    Scenario(
        key="books",
        start=("{name} owns {n} books.", "{name} has {n} books on a shelf."),
        add=("{He} buys {n} more.", "{He} borrows {n} books."),
        sub=("{He} donates {n} books.", "{He} returns {n}."),
        mul=("The number of books grows {n} times.",),
        div=("{He} packs them into {n} equal boxes and keeps one.",),
        question=("How many books are there now?", "How many books are left?"),
    ),
    Scenario(
        key="marbles",
        start=("{name} has {n} marbles.", "{name} owns {n} marbles."),
        add=("{He} wins {n} more.", "{He} gets {n} marbles."),
        sub=("{He} loses {n} marbles.", "{He} gives away {n}."),
        mul=("{He} trades them for {n} times as many.",),
        div=("{He} splits them into {n} equal groups and keeps one.",),
        question=("How many marbles does {he} have now?", "How many marbles are left?"),
    ),
    Scenario(
        key="cookies",
        start=("{name} bakes {n} cookies.", "{name} has {n} cookies."),
        add=("{He} bakes {n} more.", "{His} mother brings {n} cookies."),
        sub=("{He} sells {n} cookies.", "{His} friends eat {n}."),
        mul=("{He} bakes until there are {n} times as many.",),
        div=("{He} packs them into {n} equal boxes and keeps one.",),
        question=("How many cookies does {he} have now?", "How many cookies are left?"),
    ),
    Scenario(
        key="stickers",
        start=("{name} collects {n} stickers.", "{name} has {n} stickers."),
        add=("{He} gets {n} more.", "{He} buys {n} stickers."),
        sub=("{He} uses {n} stickers.", "{He} gives away {n}."),
        mul=("{His} collection grows {n} times.",),
        div=("{He} shares them among {n} pages equally and keeps one page.",),
        question=("How many stickers does {he} have now?", "How many stickers are left?"),
    ),
    Scenario(
        key="pencils",
        start=("{name} has {n} pencils.", "{name} keeps {n} pencils in a box."),
        add=("{He} buys {n} more.", "{His} teacher gives {him} {n} pencils."),
        sub=("{He} breaks {n} pencils.", "{He} lends out {n}."),
        mul=("The number of pencils grows {n} times.",),
        div=("{He} splits them into {n} equal sets and keeps one.",),
        question=("How many pencils does {he} have now?", "How many pencils are left?"),
    ),
    Scenario(
        key="shells",
        start=("{name} finds {n} shells.", "{name} has {n} shells."),
        add=("{He} finds {n} more.", "{His} friend adds {n} shells."),
        sub=("{He} drops {n} shells.", "{He} throws back {n}."),
        mul=("{He} collects until there are {n} times as many.",),
        div=("{He} sorts them into {n} equal piles and keeps one.",),
        question=("How many shells does {he} have now?", "How many shells are left?"),
    ),
)

NAMES: tuple[tuple[str, str], ...] = (
    ("Tom", "he"), ("Ann", "she"), ("Sam", "he"), ("Mia", "she"), ("Leo", "he"),
    ("Eva", "she"), ("Max", "he"), ("Zoe", "she"), ("Ben", "he"), ("Lily", "she"),
)  # fmt: skip

PRONOUNS = {
    "he": {"He": "He", "he": "he", "His": "His", "his": "his", "him": "him"},
    "she": {"He": "She", "he": "she", "His": "Her", "his": "her", "him": "her"},
}
CONNECTORS = ("", "Then ")
ANSWER_PREFIX = "The answer is "
_NUMBER_RE = re.compile(r"\d+")


@dataclass(frozen=True)
class Step:
    """One operation of a problem's chain: ``value <op> operand = result``."""

    op: str
    operand: int
    result: int


@dataclass(frozen=True)
class Problem:
    """One underlying problem: the numbers and operations, its gold answer and all its wordings.

    ``text`` is the original view; ``rephrasings`` keep the numbers (in the same order), the operations
    and the answer; ``scenarios`` names the story of each view (original first).
    """

    start: int
    steps: tuple[Step, ...]
    text: str
    rephrasings: tuple[str, ...]
    scenarios: tuple[str, ...] = field(default=())

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    @property
    def numbers(self) -> tuple[int, ...]:
        """The numbers a reader sees, in order: the start value then each operand."""
        return (self.start, *(s.operand for s in self.steps))

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(s.op for s in self.steps)

    @property
    def key(self) -> str:
        """Identity of the underlying problem (numbers + operations), independent of wording."""
        return f"{self.start}" + "".join(f"{OP_SYMBOLS[s.op]}{s.operand}" for s in self.steps)

    @property
    def views(self) -> tuple[str, ...]:
        return (self.text, *self.rephrasings)

    @property
    def solution(self) -> str:
        """The correct worked solution, ending in ``\\boxed{answer}``."""
        return solution_text(self)


def apply_op(op: str, value: int, operand: int) -> int:
    """Integer result of one step; division is floor division so corrupted chains stay integral."""
    if op == "add":
        return value + operand
    if op == "sub":
        return value - operand
    if op == "mul":
        return value * operand
    if op == "div":
        return value // operand
    raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")


def _feasible_steps(
    value: int, rng: random.Random, max_value: int, max_operand: int
) -> list[tuple[str, int]]:
    """One candidate operand per operation that keeps the chain in 1..max_value with exact division."""
    out: list[tuple[str, int]] = []
    if value + 2 <= max_value:
        out.append(("add", rng.randint(2, min(max_operand, max_value - value))))
    if value >= 3:
        out.append(("sub", rng.randint(2, min(max_operand, value - 1))))
    mul_ops = [m for m in range(2, 6) if value * m <= max_value]
    if mul_ops:
        out.append(("mul", rng.choice(mul_ops)))
    div_ops = [d for d in range(2, 6) if value % d == 0 and value // d >= 1]
    if div_ops:
        out.append(("div", rng.choice(div_ops)))
    return out


def _sample_chain(
    rng: random.Random, min_steps: int, max_steps: int, max_value: int, max_operand: int, max_start: int
) -> tuple[int, tuple[Step, ...]]:
    start = rng.randint(2, max_start)
    value = start
    steps: list[Step] = []
    for _ in range(rng.randint(min_steps, max_steps)):
        op, operand = rng.choice(_feasible_steps(value, rng, max_value, max_operand))
        value = apply_op(op, value, operand)
        steps.append(Step(op, operand, value))
    return start, tuple(steps)


def render(
    start: int, steps: Iterable[Step], scenario: Scenario, name: str, pronoun: str, rng: random.Random
) -> str:
    """Tell one chain as a story in ``scenario`` about ``name``; wording choices come from ``rng``."""
    fields = {"name": name, **PRONOUNS[pronoun]}
    sentences = [rng.choice(scenario.start).format(n=start, **fields)]
    for step in steps:
        sentence = rng.choice(scenario.templates(step.op)).format(n=step.operand, **fields)
        connector = rng.choice(CONNECTORS)
        if connector:
            sentence = connector + sentence[0].lower() + sentence[1:]
        sentences.append(sentence)
    sentences.append(rng.choice(scenario.question).format(**fields))
    return " ".join(sentences)


def _step_lines(start: int, steps: Iterable[tuple[str, int]], results: Iterable[int]) -> list[str]:
    lines, value = [], start
    for (op, operand), result in zip(steps, results, strict=True):
        lines.append(f"{value} {OP_SYMBOLS[op]} {operand} = {result}.")
        value = result
    return lines


def solution_text(
    problem: Problem,
    corrupt: bool = False,
    rng: random.Random | None = None,
    *,
    boxed: bool = True,
    plain_answer: bool = False,
) -> str:
    """A worked solution: one equation per step, then ``The answer is \\boxed{answer}.``

    ``corrupt=True`` introduces one random mistake (a wrong intermediate result, or a wrong operand copied
    from the question) and carries it through the rest of the chain, so the final boxed answer is wrong
    in a way that varies from sample to sample. ``boxed=False`` stops after a random number of the
    equations and states no answer at all (so answer extraction finds none). Both need ``rng``; they
    exist to make pretraining data imperfect. ``plain_answer=True`` ends with ``The answer is answer.``
    and no box: an answer the project's lenient extraction reads and the paper's box-only rule does not.
    """
    ops = [(s.op, s.operand) for s in problem.steps]
    results = [s.result for s in problem.steps]
    if corrupt:
        if rng is None:
            raise ValueError("solution_text(corrupt=True) needs an rng")
        ops, results = _corrupted_chain(problem, rng)
    lines = _step_lines(problem.start, ops, results)
    final = results[-1]
    if plain_answer:
        lines.append(f"{ANSWER_PREFIX}{final}.")
    elif boxed:
        lines.append(f"{ANSWER_PREFIX}\\boxed{{{final}}}.")
    else:
        if rng is None:
            raise ValueError("solution_text(boxed=False) needs an rng")
        lines = lines[: rng.randint(1, len(lines))]
    return " ".join(lines)


def _corrupted_chain(problem: Problem, rng: random.Random) -> tuple[list[tuple[str, int]], list[int]]:
    """The problem's chain with one wrong result or operand at a random step, carried to the end.

    Redrawn until every value stays non-negative (counts of things never go below zero, even wrongly).
    """
    while True:
        ops = [(s.op, s.operand) for s in problem.steps]
        where = rng.randrange(len(ops))
        wrong_operand = rng.random() < 0.3
        results, value = [], problem.start
        for i, (op, operand) in enumerate(ops):
            if i == where and wrong_operand:
                operand = _perturb(operand, rng, minimum=1, spread=3 if op in ("mul", "div") else 10)
                ops[i] = (op, operand)
            value = apply_op(op, value, operand)
            if i == where and not wrong_operand:
                value = _perturb(value, rng, minimum=0)
            results.append(value)
        if min(results) >= 0:
            return ops, results


def _perturb(value: int, rng: random.Random, minimum: int, spread: int = 10) -> int:
    """A nearby wrong value (off by 1..spread either way), never below ``minimum``."""
    while True:
        wrong = value + rng.choice((-1, 1)) * rng.randint(1, spread)
        if wrong >= minimum and wrong != value:
            return wrong


def generate_problems(
    n: int,
    seed: int,
    *,
    n_rephrasings: int = 2,
    min_steps: int = 2,
    max_steps: int = 3,
    max_value: int = 50,
    max_operand: int = 20,
    max_start: int = 20,
    exclude: Iterable[str] = (),
) -> list[Problem]:
    """``n`` distinct problems (distinct ``Problem.key``), deterministic in ``seed``.

    ``exclude`` holds keys that must not be produced (e.g. the held-out splits when generating
    pretraining problems). Each rephrasing uses a different scenario and person from the original and
    from each other, so the views differ in wording and story while sharing numbers and answer.
    """
    if n_rephrasings >= len(SCENARIOS):
        raise ValueError(
            f"n_rephrasings must be < {len(SCENARIOS)} (one scenario per view), got {n_rephrasings}"
        )
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    rng = random.Random(seed)
    seen = set(exclude)
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"could not find {n} distinct problems with these settings (found {len(problems)})"
            )
        start, steps = _sample_chain(rng, min_steps, max_steps, max_value, max_operand, max_start)
        key = f"{start}" + "".join(f"{OP_SYMBOLS[s.op]}{s.operand}" for s in steps)
        if key in seen:
            continue
        seen.add(key)
        scenarios = rng.sample(SCENARIOS, n_rephrasings + 1)
        names = rng.sample(NAMES, n_rephrasings + 1)
        texts = [render(start, steps, sc, nm, pr, rng) for sc, (nm, pr) in zip(scenarios, names, strict=True)]
        problems.append(Problem(start, steps, texts[0], tuple(texts[1:]), tuple(s.key for s in scenarios)))
    return problems


def numbers_in(text: str) -> list[int]:
    """The integers written in ``text``, in order (what a view must preserve)."""
    return [int(m) for m in _NUMBER_RE.findall(text)]


def vocabulary_texts() -> Iterator[str]:
    """Every sentence form of the world with every person, plus the solution phrases.

    The tokenizer's word list is read from these, so it covers the closed vocabulary exactly, whatever
    problems a seed happens to draw.
    """
    for scenario in SCENARIOS:
        for part in ("start", "add", "sub", "mul", "div", "question"):
            for template in scenario.templates(part):
                for name, pronoun in NAMES:
                    sentence = template.format(n=7, name=name, **PRONOUNS[pronoun])
                    for connector in CONNECTORS:
                        text = connector + sentence[0].lower() + sentence[1:] if connector else sentence
                        yield text
                        yield " " + text  # the same sentence after an earlier one
    yield f"1 + 2 = 3. 4 - 1 = 3. 3 * 2 = 6. 6 / 2 = 3. {ANSWER_PREFIX}\\boxed{{3}}. {ANSWER_PREFIX}3."
