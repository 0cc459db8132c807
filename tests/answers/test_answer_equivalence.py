"""is_equivalent: math-verify semantics behind cheap fast paths, bounded by its timeout, never raising."""

from __future__ import annotations

import time

import pytest

from corewarding.answers import clear_cache, get_pool, is_equivalent, normalize
from corewarding.answers.equivalence import prejudge

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
    assert time.monotonic() - start < 1.0 + 0.5
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
    assert time.monotonic() - start < 1.5
    assert pool.stats.timeouts == timeouts  # the magnitude guard answered, not the kill switch
    assert is_equivalent("2^{10}", "1024") is True  # small powers are still evaluated


def test_never_raises_on_junk() -> None:
    for pred, gold in [
        ("\\frac{", "1"),
        ("}}}", "{{{"),
        ("\x00\udfff", "1"),
        ("\\boxed{1}", "1"),
        (12, "12"),
        ("1", ["1"]),
    ]:
        assert is_equivalent(pred, gold) in (True, False)  # type: ignore[arg-type]
