"""is_equivalent: math-verify semantics behind cheap fast paths, bounded by its timeout, never raising."""

from __future__ import annotations

import logging
import time

import pytest

from corewarding.answers import batch_equivalent, clear_cache, equivalence, get_pool, is_equivalent, normalize
from corewarding.answers.equivalence import DEFAULT_TIMEOUT_S, prejudge

EQUIVALENT = [
    ("\\frac12", "0.5"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{3}{4}", "\\frac34"),
    ("0.75", "\\frac{3}{4}"),
    ("30^\\circ", "30"),
    ("30", "30^{\\circ}"),
    ("[1,2)", "[1, 2)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),
    ("\\text{(B)}", "B"),
    ("5\\text{ cm}", "5"),
    ("1,000", "1000"),
    ("10{,}000", "10000"),
    ("142", "142.0"),
    ("142.0", "142"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("x^2+1", "1+x^2"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("$5$", "5"),
    ("  7 ", "7."),
]

NOT_EQUIVALENT = [
    ("2", "3"),
    ("142.5", "142"),
    ("1,000", "1"),
    ("\\frac{1}{3}", "0.33"),
    ("(1,2)", "[1,2]"),
    ("A", "B"),
    ("x^2", "x^3"),
    ("", "5"),
    (None, "5"),
    ("5", None),
]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_equivalent(pred: str, gold: str) -> None:
    assert is_equivalent(pred, gold) is True


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUIVALENT)
def test_not_equivalent(pred: str | None, gold: str | None) -> None:
    assert is_equivalent(pred, gold) is False


def test_fast_paths_skip_the_workers() -> None:
    assert prejudge("  42 ", "42") is True  # exact after whitespace strip
    assert prejudge("1,000", "1000.00") is True  # two plain decimals
    assert prejudge("17", "18") is False
    assert prejudge("x" * 5000, "x") is False  # over the size cap: not parsed
    assert prejudge("x" * 5000, "x" * 5000) is True  # identical is identical, whatever the length
    assert prejudge("\\frac12", "0.5") == ("\\frac12", "0.5")  # needs math-verify
    tasks_before = get_pool().stats.tasks
    assert is_equivalent("123,456", "123456") is True
    assert get_pool().stats.tasks == tasks_before


def test_cache_answers_repeated_pairs_without_the_pool() -> None:
    clear_cache()
    pool = get_pool()
    assert is_equivalent("\\frac{7}{8}", "0.875")
    tasks = pool.stats.tasks
    for _ in range(20):
        assert is_equivalent("\\frac{7}{8}", "0.875")
    assert pool.stats.tasks == tasks


def test_normalize_only_trims() -> None:
    assert normalize("  $\\frac12$ ") == "\\frac12"
    assert normalize("\\(x\\).") == "x"
    assert normalize("$a$ or $b$") == "$a$ or $b$"  # two math spans, not one


@pytest.mark.parametrize(
    "hostile",
    [
        "\\prod_{k=1}^{10^{7}} k",  # sympy multiplies ten million numbers: only the deadline stops it
        "\\sum_{k=1}^{10^{12}} k^{k}",
    ],
)
def test_single_call_never_outlives_its_timeout(hostile: str) -> None:
    pool = get_pool()
    pool.start()  # start-up (once per process) is not part of a comparison's budget
    clear_cache()
    timeouts = pool.stats.timeouts
    start = time.monotonic()
    assert is_equivalent(hostile, "5", timeout=1.0) is False
    # killed at its deadline: this product alone runs for minutes; 3 s over the deadline cover replacing
    # the worker on a busy machine
    assert time.monotonic() - start < 1.0 + 3.0
    assert pool.stats.timeouts == timeouts + 1  # the worker was killed at its deadline...
    assert is_equivalent("\\frac{1}{4}", "0.25", timeout=1.0) is True  # ...and replaced


def test_power_tower_is_rejected_without_a_timeout() -> None:
    pool = get_pool()
    pool.start()
    clear_cache()
    timeouts = pool.stats.timeouts
    start = time.monotonic()
    assert is_equivalent("9^{9^{9^{9^{9}}}}", "5") is False
    assert is_equivalent("5", "10^{10^{6}}") is False
    assert is_equivalent("20000!", "5") is False
    assert pool.stats.timeouts == timeouts  # the magnitude guard answered, not the kill switch
    # three parses (about 0.1 s idle): less than the full timeout each would cost without the guard
    assert time.monotonic() - start < 3 * DEFAULT_TIMEOUT_S
    assert is_equivalent("2^{10}", "1024") is True  # small powers are still evaluated


# (pair, verdict): malformed input gets a real verdict from the normal path, not the catch-all's "no"
JUNK = [
    (("\\frac{", "1"), False),  # unbalanced braces
    (("}}}", "{{{"), False),
    (("\x00\udfff", "1"), False),  # a NUL and a lone surrogate
    (("\\boxed{1}", "1"), True),  # a box left around the answer is still the answer
    ((12, "12"), False),  # not strings: never equivalent, even when they print the same
    (("1", ["1"]), False),
    (None, False),  # not a pair at all
    (("1",), False),
    (("1", "1", "1"), False),
    (("x" * 200_000, "x"), False),  # over the length cap: not parsed
    (("x" * 200_000, "x" * 200_000), True),  # identical is identical, whatever the length
    (("\\boxed{" * 5000, "1"), False),
    (("9^{9^{9^{9^{9}}}}", "9^{9^{9^{9^{8}}}}"), False),  # the magnitude guard, not an evaluation
    (("1e999999999", "1"), False),
    (("$$", "$"), False),  # only delimiters: empty after trimming
    (("\\frac{1}{0}", "\\infty"), False),
    # honest pairs in the same batch keep their verdicts
    (("\\frac12", "0.5"), True),
    (("0.5", "\\frac{1}{2}"), True),
    (("-0", "0"), True),
    (("7", "8"), False),
]


def test_junk_gets_real_verdicts_without_the_catch_all(caplog: pytest.LogCaptureFixture) -> None:
    """``batch_equivalent`` answers "no" for a whole batch when something inside it raises; none of this
    junk may get there, and each pair gets the verdict it deserves (a batch of all False would not do)."""
    pairs = [pair for pair, _ in JUNK]
    clear_cache()
    with caplog.at_level(logging.ERROR, logger="corewarding.answers.equivalence"):
        got = batch_equivalent(pairs)  # type: ignore[arg-type]
    assert not [r for r in caplog.records if "batch_equivalent failed" in r.getMessage()]
    assert dict(zip(map(repr, pairs), got, strict=True)) == {repr(p): want for p, want in JUNK}
    for pair, want in JUNK:  # one at a time, and from the cache, the same
        if isinstance(pair, tuple) and len(pair) == 2:
            assert is_equivalent(*pair) is want, repr(pair)[:60]


def test_a_bug_inside_the_batch_costs_that_batch_not_the_caller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The catch-all itself: an exception inside is logged and every pair of the batch counts as "no"."""

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(equivalence, "_batch_equivalent", broken)
    with caplog.at_level(logging.ERROR, logger="corewarding.answers.equivalence"):
        assert batch_equivalent([("1", "1"), ("2", "2")]) == [False, False]
    assert any("batch_equivalent failed; 2 pairs" in r.getMessage() for r in caplog.records)
