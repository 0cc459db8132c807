"""extract_answer: last box with nested braces, fallbacks in order, None when nothing, linear and safe; and
the paper's boxed-only mode beside the lenient one."""

from __future__ import annotations

import random

import pytest

from corewarding.answers import extract_answer, reference_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is $\\boxed{42}$.", "42"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{a\\\\{b}}", "a\\\\{b}"),  # "\\" is a line break, the "{" after it is a real group
        ("\\fbox{7}", "7"),
        ("$\\boxed 5$", "5"),
        ("\\boxed {12}", "12"),
        ("\\boxed{\\boxed{5}}", "5"),  # the innermost (latest-opened) box
        ("\\boxed{3} and later \\boxed{", "3"),  # an unclosed box is not an answer; the complete one is
        ("\\boxed{ } \\boxed{4}", "4"),
        ("\\boxed{4} \\boxed{  }", "4"),  # an empty box is no answer
        ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
        ("x \\boxedx{3} y", None),  # \boxedx is another command
    ],
)
def test_boxes(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
        ("#### 1,000\n", "1,000"),
        ("The answer is 7.", "7"),
        ("The answer is: \\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("Final answer: $x^2$", "x^2"),
        ("**Final Answer:** 12", "12"),
        ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("the answer is 3\nbut actually the answer is 4", "4"),  # the last statement wins
        ("\\boxed{2}\n#### 3\nThe answer is 4", "2"),  # box before ####, #### before "answer is"
        ("#### 3\nThe answer is 4", "3"),
    ],
)
def test_fallbacks(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no answer here",
        "\\boxed{unfinished",
        "The answer is \\boxed{",  # the fallback must not return half a box either
        "To find the answer, we compute.",  # "answer" without "is"/":" is prose
        "the answers are many",
        "\\boxed{}",
        "####   \n",
        "}}}}{{{{",
    ],
)
def test_nothing_found(text: str) -> None:
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    ("text", "lenient", "boxed"),
    [
        ("so $\\boxed{42}$.", "42", "42"),
        ("\\boxed{\\boxed{5}}", "5", "5"),
        ("$\\boxed 7$", "7", "7"),
        ("\\boxed{ 7 }", "7", " 7 "),  # the paper compares raw strings
        ("\\fbox{7}", "7", None),  # the paper's remove_boxed rejects \fbox
        ("#### 5", "5", None),  # no fallback in the paper's rule
        ("The answer is 5.", "5", None),
        ("\\boxed{3} and later \\boxed{", "3", None),  # only the last box counts, and it never closes
        ("\\boxed 3$ then \\boxed{4}", "4", "3"),  # the paper's space form wins wherever it is
        ("\\boxed{}", None, None),
        ("\\boxed{  }", None, None),
        ("no answer", None, None),
    ],
)
def test_lenient_and_boxed_modes(text: str, lenient: str | None, boxed: str | None) -> None:
    assert extract_answer(text) == extract_answer(text, "lenient") == lenient
    assert extract_answer(text, "boxed") == boxed


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="extraction='strict'"):
        extract_answer("\\boxed{1}", "strict")


def test_non_strings_are_no_answer() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(b"\\boxed{1}") is None  # type: ignore[arg-type]


def test_hostile_inputs_are_fast_and_safe(timing) -> None:
    rng = random.Random(0)
    nested = "\\boxed{" * 5000
    cases = {
        "nested unclosed": (nested, None),
        "nested closed": (nested + "7" + "}" * 5000, "7"),
        "200 kB of braces": ("{" * 100_000 + "}" * 100_000, None),
        "200 kB inside a box": ("\\boxed{" + "1" * 200_000 + "}", "1" * 200_000),
        "binary junk": ("".join(chr(rng.randrange(0, 0x10FFFF)) for _ in range(50_000)), None),
        "many answer phrases": ("the answer is 1\n" * 20_000, "1"),
        "many hashes": ("#" * 200_000, None),
        "many spaces after box": ("\\boxed" + " " * 200_000, None),
        "surrogates": ("\ud800\\boxed{\udfff}", "\udfff"),
    }
    for name, (text, expected) in cases.items():
        # well under a second each, or within 100 plain passes over the text on a busy machine (a quadratic
        # scan of these 50-200 kB inputs takes minutes)
        timing.within(lambda t=text: extract_answer(t, "boxed"), 1.0, text)  # the paper's rule, as quick
        got = timing.within(lambda t=text: extract_answer(t), 1.0, text)
        if name != "binary junk":  # random code points: any result is fine, as long as it is quick
            assert got == expected, name


def test_linear_time(timing) -> None:
    """16x the input costs about 16x the time (20x measured: allocation); a quadratic scan costs 256x."""

    def text(n: int) -> str:
        return ("\\boxed{" * n) + ("x}" * (n // 2))

    small_text, large_text = text(5_000), text(80_000)
    small, large = timing.growth(lambda: extract_answer(small_text), lambda: extract_answer(large_text))
    assert large < small * 16 * 4, (small, large)


def test_reference_answer_rule() -> None:
    assert reference_answer("We get 4.\n#### 1,234") == "1,234"
    assert reference_answer("so $\\boxed{\\frac{1}{2}}$. The answer is: \\frac{1}{2}") == "\\frac{1}{2}"
    assert reference_answer("  \\frac{1}{2} ") == "\\frac{1}{2}"  # a bare gold is used as written
    assert reference_answer("142.0") == "142.0"
