"""Pull the final answer out of a model's (or a reference's) solution text.

Rewards, evaluation and grading all need the same rule, and it runs on untrusted model output, so it
must never raise and must stay linear in the input: a policy under RL will happily emit 200 kB of braces
or thousands of nested ``\\boxed{``. Brace matching is therefore one left-to-right scan over the
interesting tokens only (backslash-escapes, braces, box commands), never a backtracking regex.

Order of preference:

1. the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (latest opening wins, so the inner box of
   ``\\boxed{\\boxed{5}}`` is the answer; ``\\boxed 5`` without braces counts too; an unclosed or empty
   box is not an answer);
2. GSM8K's ``#### 42`` (the last one);
3. "The answer is X" / "Final answer: X" (the last one, up to the end of its line).
"""

from __future__ import annotations

import re

# Tokens that matter for brace matching. Order matters: an escaped backslash ("\\", a LaTeX line break)
# must be consumed first so that "\\{" reads as line break + brace, and "\{" / "\}" are literal braces
# that never open or close a group.
_TOKEN = re.compile(r"\\\\|\\[{}]|\\(?:boxed|fbox)(?![A-Za-z])|[{}]")
_SPACE = re.compile(r"\s*")
_NONSPACE = re.compile(r"\S")
# Argument of the brace-less form "\boxed 5": one whitespace-delimited token, stopping at "$".
_BARE_ARG = re.compile(r"[^\s$]+")
# "The answer is: X", "The final answer is $X$", "Final Answer: X", "**Final Answer:** X": the word
# "answer" followed by "is" or a colon (so prose like "the answer, we see" does not count). No nested
# quantifiers, so matching is linear; the capture is the rest of the line, cleaned afterwards.
_ANSWER_IS = re.compile(r"\banswer(?:\*\*)?\s*(?:is\b\s*:?|:)(?:\*\*)?[ \t]*", re.IGNORECASE)
_STRIP_CHARS = " \t\r\n*"


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``, or ``None`` when it states none.

    Never raises: anything that is not a ``str`` gives ``None``. Runs in time linear in ``len(text)``.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        boxed = _last_box(text)
        if boxed is not None:
            return boxed
        return _after_hashes(text) or _after_answer_is(text)
    except Exception:  # pragma: no cover - defensive: malformed input must cost an answer, not a step
        return None


def reference_answer(text: str) -> str:
    """The gold answer held in a reference field: extracted when it is a solution, else the text itself.

    Rule (used by ``corewarding grade``): a reference that states its answer the way solutions do (a box,
    ``####``, "The answer is") is reduced to that answer; a bare answer ("42", ``\\frac{1}{2}``) states
    none of those and is used as written, stripped.
    """
    extracted = extract_answer(text)
    return extracted if extracted is not None else text.strip()


def _last_box(text: str) -> str | None:
    """Content of the complete box with the latest opening, or ``None``."""
    stack: list[tuple[int, int] | None] = []  # per open brace: (box start, content start) or None
    expect_brace_at = -1  # position of the "{" that opens the argument of the last box command
    expect_box_start = -1
    best: tuple[int, int, int] | None = None  # (box start, content start, content end)
    n = len(text)
    for match in _TOKEN.finditer(text):
        token = match.group()
        start = match.start()
        if token == "{":
            if start == expect_brace_at:
                stack.append((expect_box_start, start + 1))
            else:
                stack.append(None)
        elif token == "}":
            if not stack:
                continue
            opener = stack.pop()
            if opener is None:
                continue
            box_start, content_start = opener
            if (best is None or box_start > best[0]) and _NONSPACE.search(text, content_start, start):
                best = (box_start, content_start, start)
        elif token[1] in "bf":  # \boxed or \fbox
            after = _SPACE.match(text, match.end()).end()
            if after < n and text[after] == "{":
                expect_brace_at, expect_box_start = after, start
            elif after > match.end() and after < n:
                bare = _BARE_ARG.match(text, after)
                if bare is not None and (best is None or start > best[0]):
                    best = (start, bare.start(), bare.end())
        # "\\", "\{" and "\}" are skipped: they neither open nor close a group.
    if best is None:
        return None
    content = text[best[1] : best[2]].strip()
    return content or None


def _after_hashes(text: str) -> str | None:
    """GSM8K style: whatever follows the last ``####`` on its line."""
    idx = text.rfind("####")
    if idx < 0:
        return None
    end = text.find("\n", idx)
    return _clean_tail(text[idx + 4 : end if end >= 0 else len(text)])


def _after_answer_is(text: str) -> str | None:
    """ "The answer is X" / "Final answer: X": the rest of the line after the last such phrase."""
    last = None
    for last in _ANSWER_IS.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    end = text.find("\n", last.end())
    return _clean_tail(text[last.end() : end if end >= 0 else len(text)])


def _clean_tail(raw: str) -> str | None:
    """Trim the decoration around an answer written in prose: markdown bold, ``$`` math, a final period.

    Returns ``None`` when what remains is empty or has unbalanced braces (e.g. the ``\\boxed{`` of an
    unfinished box), since a half-written expression is not an answer.
    """
    answer = raw.strip(_STRIP_CHARS)
    for _ in range(3):
        before = answer
        if answer.endswith("."):
            answer = answer[:-1].rstrip(_STRIP_CHARS)
        if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
            answer = answer.strip("$").strip(_STRIP_CHARS)
        if answer.startswith("\\(") and answer.endswith("\\)"):
            answer = answer[2:-2].strip(_STRIP_CHARS)
        if answer == before:
            break
    if not answer or not braces_balanced(answer):
        return None
    return answer


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
