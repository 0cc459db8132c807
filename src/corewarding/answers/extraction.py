"""Pull the final answer out of a model's (or a reference's) solution text.

Rewards, evaluation and grading all need the same rule, and it runs on untrusted model output, so it
must never raise and must stay linear in the input: a policy under RL will happily emit 200 kB of braces
or thousands of nested ``\\boxed{``. Boxes are parsed by the project's one box parser,
``corewarding.data.boxed`` (one left-to-right scan, never a backtracking regex).

Two extraction modes (``reward.extraction`` in a training config):

``lenient`` (the default), in order of preference:

1. the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (latest opening wins, so the inner box of
   ``\\boxed{\\boxed{5}}`` is the answer; ``\\boxed 5`` without braces counts too; an unclosed or empty
   box is not an answer);
2. GSM8K's ``#### 42`` (the last one);
3. "The answer is X" / "Final answer: X" (the last one, up to the end of its line).

``boxed``: the Co-rewarding paper's rule, exactly (``corewarding.data.boxed.paper_last_boxed``): the
last ``\\boxed{}`` only, no fallback, the content verbatim (not stripped: the paper votes and matches
raw strings). No box, or a blank one, is no answer.
"""

from __future__ import annotations

import re

from corewarding.data.boxed import braces_balanced, last_box, paper_last_boxed

EXTRACTIONS = ("lenient", "boxed")

# "The answer is: X", "The final answer is $X$", "Final Answer: X", "**Final Answer:** X": the word
# "answer" followed by "is" or a colon (so prose like "the answer, we see" does not count). No nested
# quantifiers, so matching is linear; the capture is the rest of the line, cleaned afterwards.
_ANSWER_IS = re.compile(r"\banswer(?:\*\*)?\s*(?:is\b\s*:?|:)(?:\*\*)?[ \t]*", re.IGNORECASE)
_STRIP_CHARS = " \t\r\n*"

__all__ = ["EXTRACTIONS", "braces_balanced", "extract_answer", "reference_answer"]


def extract_answer(text: str, extraction: str = "lenient") -> str | None:
    """The final answer in ``text`` under ``extraction`` (``lenient`` or ``boxed``), or ``None``.

    Never raises on any ``text`` (anything that is not a ``str`` gives ``None``); an unknown
    ``extraction`` is a ``ValueError``. Runs in time linear in ``len(text)``.
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction={extraction!r}: expected one of {', '.join(EXTRACTIONS)}")
    if not isinstance(text, str) or not text:
        return None
    try:
        if extraction == "boxed":
            answer = paper_last_boxed(text)
            return answer if answer and not answer.isspace() else None
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
    """Stripped content of the complete, non-blank box with the latest opening, or ``None``."""
    box = last_box(text, nonblank=True)
    return None if box is None else box.content(text).strip()


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
