"""The one ``\\boxed{}`` parser. Gold loaders, answer extraction, rewards and grading all read boxes here.

Box syntax understood: ``\\boxed{...}`` and ``\\fbox{...}`` with nested braces, ``\\boxed {7}`` (space
before the brace) and the brace-less ``\\boxed 7`` (one token, up to whitespace or ``$``). Braces are
matched the way LaTeX source balances them: ``\\{`` and ``\\}`` are literal braces that neither open nor
close a group, and ``\\\\`` (a line break) is consumed first, so ``\\\\{`` is a line break and a real
group. ``\\boxedx`` is another command, not a box. An unclosed box is not a box.

Two selection rules over boxes:

* :func:`last_box` / :func:`last_boxed` (gold loaders; ``corewarding.answers.extract_answer``'s lenient
  mode, which also skips blank boxes): the complete box with the *latest opening*. For
  ``\\boxed{\\boxed{2}}`` that is the inner box, ``2``, which is also what the paper's ``rfind``-based code
  picks. A later unclosed box does not hide an earlier complete one.
* :func:`paper_last_boxed`: an exact port of the rule of the Co-rewarding paper's released code, for
  reproducing it (see its docstring), quirks included.

Both run in time linear in the length of the text, whatever it holds (a policy under RL will happily emit
20,000 nested or unclosed ``\\boxed{``): the scan is one left-to-right pass over the interesting tokens
with a stack of open braces; it never rescans the text from each box, and uses no backtracking regex.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

# Tokens that matter for brace matching. Order matters: an escaped backslash ("\\", a LaTeX line break)
# must be consumed first so that "\\{" reads as line break + brace, and "\{" / "\}" are literal braces.
_TOKEN = re.compile(r"\\\\|\\[{}]|\\(?:boxed|fbox)(?![A-Za-z])|[{}]")
_SPACE = re.compile(r"\s*")
# Argument of the brace-less form "\boxed 5": one whitespace-delimited token, stopping at "$".
_BARE_ARG = re.compile(r"[^\s$]+")
_RAW_BRACE = re.compile(r"[{}]")
_NONSPACE = re.compile(r"\S")


class Box(NamedTuple):
    """One complete box: ``text[content_start:content_end]`` is its content, verbatim."""

    start: int  # index of the backslash of ``\boxed`` / ``\fbox``
    content_start: int
    content_end: int
    braced: bool  # False for the brace-less ``\boxed 7``

    def content(self, text: str) -> str:
        return text[self.content_start : self.content_end]


def iter_boxes(text: str) -> Iterator[Box]:
    """Every complete box of ``text``, in the order their ends are found (not sorted by ``start``).

    Nested boxes are all reported (``\\boxed{\\boxed{2}}`` gives two). Linear in ``len(text)``.
    """
    if not isinstance(text, str):
        return
    # per open brace: (box start, content start) when it opens a box argument, else None
    stack: list[tuple[int, int] | None] = []
    expect_brace_at = -1  # position of the "{" that opens the argument of the last box command
    expect_box_start = -1
    n = len(text)
    for match in _TOKEN.finditer(text):
        token = match.group()
        pos = match.start()
        if token == "{":
            stack.append((expect_box_start, pos + 1) if pos == expect_brace_at else None)
        elif token == "}":
            opener = stack.pop() if stack else None
            if opener is not None:
                yield Box(opener[0], opener[1], pos, True)
        elif token[1] in "bf":  # \boxed or \fbox
            after = _SPACE.match(text, match.end()).end()
            if after < n and text[after] == "{":
                expect_brace_at, expect_box_start = after, pos
            elif match.end() < after < n:
                bare = _BARE_ARG.match(text, after)
                if bare is not None:
                    yield Box(pos, bare.start(), bare.end(), False)
        # "\\", "\{" and "\}" neither open nor close a group


def last_box(text: str, *, nonblank: bool = False) -> Box | None:
    """The complete box with the latest opening; with ``nonblank``, among boxes whose content is not blank.

    Linear: contents are never copied, and the blank check stops at the first non-space character.
    """
    best: Box | None = None
    for box in iter_boxes(text):
        if best is not None and box.start <= best.start:
            continue
        if nonblank and _NONSPACE.search(text, box.content_start, box.content_end) is None:
            continue
        best = box
    return best


def last_boxed(text: str) -> str | None:
    """Content of the complete ``\\boxed{...}`` (or ``\\fbox{...}``) with the latest opening, else ``None``.

    Verbatim, with no normalisation ("" for ``\\boxed{}``): turning a reference solution into a gold string
    must not alter the answer; equivalence checking is ``corewarding.answers``' job. ``\\boxed{\\boxed{2}}``
    yields ``2``; an unclosed box is skipped (``\\boxed{4} then \\boxed{3`` yields ``4``).
    """
    box = last_box(text)
    return None if box is None else box.content(text)


def paper_last_boxed(text: str) -> str | None:
    """The answer the Co-rewarding paper's code reads from a response; ``None`` where it reads none.

    A faithful port of ``last_boxed_only_string`` followed by ``remove_boxed`` from the paper's repository
    (github.com/resistzzz/Co-rewarding, ``Co-rewarding-I/verl/utils/reward_score/math.py``, identical in
    ``Co-rewarding-II/``), as its reward managers (``verl/workers/reward_manager/co_reward.py``,
    ``co_rewarding_II.py``, ``majority_voting.py``: ``extract_answer``) and its ground-truth score
    (``math.compute_score``) call them, where any exception means no answer. Rewritten to run in linear
    time; the result is the same on every input, quirks included:

    * if ``"\\boxed "`` (with a space) occurs anywhere, the answer is everything after its last occurrence up
      to the next ``$`` (or the end of the text), even when a ``\\boxed{...}`` comes later;
    * otherwise only the *last* occurrence of ``\\boxed`` counts: it must be followed at once by ``{``
      and that brace must close, else there is no answer (an earlier complete box is not used);
    * braces are counted raw: ``\\{`` and ``\\}`` count like ``{`` and ``}``;
    * ``\\fbox{...}`` is never an answer (``remove_boxed`` asserts the ``\\boxed{`` prefix and raises);
    * the content is returned verbatim, surrounding whitespace included; ``\\boxed{}`` gives ``""``.
    """
    if not isinstance(text, str):
        return None
    space = text.rfind("\\boxed ")
    if space >= 0:
        rest = text[space + len("\\boxed ") :]
        dollar = rest.find("$")
        return rest if dollar < 0 else rest[:dollar]
    start = text.rfind("\\boxed")
    if start < 0 or not text.startswith("\\boxed{", start):
        return None
    depth = 0
    for match in _RAW_BRACE.finditer(text, start + len("\\boxed")):
        if match.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : match.start()]
    return None


def braces_balanced(text: str) -> bool:
    """Whether every unescaped ``{`` in ``text`` is closed, in order (escaped ``\\{`` ``\\}`` ignored)."""
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0
