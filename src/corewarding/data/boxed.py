"""The gold answer inside a reference solution: the content of its last ``\\boxed{}``.

Reference solutions (MATH, MATH-500) mark their final answer with ``\\boxed{...}``. Turning such a
solution into a gold string must not alter the answer, so this returns the box content verbatim (no
normalization): equivalence checking is ``corewarding.answers``' job, not the loader's. Kept here, small
and dependency-free, because the loaders need exactly "the last top-level box, as written" and nothing
that tolerates model-output quirks.
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


def _parse_box(text: str, start: int) -> tuple[str, int] | None:
    """Parse the box whose command ends at ``start``; return (content, index after it) or ``None``."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j], j + 1
        return None  # unbalanced: no complete box here
    if i > start:  # "\boxed 5": the argument runs to the next "$" or whitespace
        match = re.match(r"[^\s$]+", text[i:])
        if match:
            return match.group(0), i + match.end()
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, else ``None``.

    Boxes are scanned left to right and a box nested inside another is not counted separately, so
    ``\\boxed{\\boxed{2}}`` yields ``\\boxed{2}``; braces are balanced the way LaTeX source balances them.
    """
    found: str | None = None
    pos = 0
    while True:
        match = _BOX_RE.search(text, pos)
        if match is None:
            return found
        parsed = _parse_box(text, match.end())
        if parsed is None:
            pos = match.end()
            continue
        found, pos = parsed
