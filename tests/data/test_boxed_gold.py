"""last_boxed: the verbatim content of a solution's last box (gold extraction for MATH-500)."""

from __future__ import annotations

import pytest

from corewarding.data import last_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"first \boxed{1}, finally \boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"$\boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches", r"\frac{639}{40}"),
        (r"\boxed{\boxed{2}}", "2"),  # the latest-opened box, as answer extraction and the paper read it
        (r"answer: \fbox{x^2}", "x^2"),
        (r"so $\boxed 7$", "7"),
        (r"\boxed{ 3, 4 }", " 3, 4 "),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}.$The answer", r"\left( 3, \frac{\pi}{2} \right)"),
        ("no box here", None),
        (r"unbalanced \boxed{3", None),
        (r"\boxed{4} then unbalanced \boxed{3", "4"),
        (r"\boxed{}", ""),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected
