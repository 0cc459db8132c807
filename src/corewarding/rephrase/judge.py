"""Whether one reply is an acceptable rewrite of its question, and if not, why.

A reply is accepted only if it parses (see ``prompt.parse_reply``), is not empty, is not the original
copied back (compared after collapsing whitespace) and keeps every number literal of the original (see
``numbers``). Anything else is a failed attempt with a status and a human-readable reason, so the
accounting in the log and the summary says exactly what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from corewarding.rephrase.numbers import missing_numbers
from corewarding.rephrase.prompt import normalize_whitespace, parse_reply

OK = "ok"
EMPTY = "empty"
UNPARSABLE = "unparsable"
VERBATIM = "verbatim"
LOST_NUMBER = "lost_number"
NO_CONTENT = "no_content"  # the server answered with ``content: null``: no text to judge at all
ATTEMPT_STATUSES = (OK, EMPTY, UNPARSABLE, VERBATIM, LOST_NUMBER, NO_CONTENT)


@dataclass(frozen=True)
class Verdict:
    status: str
    rewrite: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == OK


def judge_reply(original: str, reply: str | None, *, check_numbers: bool = True) -> Verdict:
    """Accept ``reply`` as a rewrite of ``original`` or say why not (``status`` in ``ATTEMPT_STATUSES``)."""
    parsed = parse_reply(reply)
    if parsed.rewrite is None:
        return Verdict(parsed.status, None, parsed.reason)
    rewrite = parsed.rewrite
    if normalize_whitespace(rewrite) == normalize_whitespace(original):
        return Verdict(VERBATIM, None, "the rewrite repeats the original question verbatim")
    if check_numbers:
        missing = missing_numbers(original, rewrite)
        if missing:
            shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
            return Verdict(LOST_NUMBER, None, f"the rewrite lost number(s) of the original: {shown}")
    return Verdict(OK, rewrite, "")
