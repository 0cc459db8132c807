"""The rewriting instruction, how a question is put into it, and how the rewrite is read back.

The instruction is the one published with Co-rewarding (``resources/rephrase_prompt.txt``). It ends with
the answer format (``### RESULT_START`` / ``ORIGINAL:`` / ``REWRITE:`` / ``### RESULT_END``) and no slot for
the question: the paper's script sends ONE user message, the instruction followed by a blank line and the
stripped question (``instruction + "\\n" + question.strip()`` with the instruction ending in a newline), and
no system prompt. :func:`build_messages` reproduces exactly that, so rewrites made here match the
distribution of the published ones. A custom ``--prompt-file`` may instead contain the placeholder
``{question}``; then the question is substituted there and nothing is appended.

Parsing follows the paper too: the rewrite is the text after ``REWRITE:`` inside the result block. Any
``<think>…</think>`` section is removed first, because a reasoning model often drafts the markers while
thinking, and the last complete block wins (the final answer comes after the drafts).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corewarding.errors import ConfigError
from corewarding.files import decode_utf8

START_MARKER = "### RESULT_START"
END_MARKER = "### RESULT_END"
REWRITE_LABEL = "REWRITE:"
QUESTION_PLACEHOLDER = "{question}"

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_WS_RE = re.compile(r"\s+")


def default_instruction() -> str:
    """The paper's rewriting instruction, shipped inside the package."""
    return (
        resources.files("corewarding.resources").joinpath("rephrase_prompt.txt").read_text(encoding="utf-8")
    )


def load_instruction(path: str | Path | None = None) -> str:
    """The instruction from ``path`` (``--prompt-file``) or the packaged default.

    A custom instruction must still ask for the result markers, otherwise no reply could ever be parsed
    and every row would burn all its retries; that is refused up front.
    """
    if path is None:
        return default_instruction()
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"--prompt-file {p}: cannot be read ({err.strerror or err})") from err
    text = decode_utf8(data, p, "text (the rewriting instruction)")  # a DataError naming the line
    missing = [m for m in (START_MARKER, END_MARKER, REWRITE_LABEL) if m not in text]
    if missing:
        raise ConfigError(
            f"--prompt-file {p}: the instruction must ask for the output format with {', '.join(missing)} "
            f"(replies are parsed between {START_MARKER!r} and {END_MARKER!r}, after {REWRITE_LABEL!r})"
        )
    if not text.strip():
        raise ConfigError(f"--prompt-file {p}: file is empty; expected a rewriting instruction")
    return text


def instruction_digest(instruction: str) -> str:
    """Short content hash, stored with resumable state so a changed prompt is not mixed into one output."""
    return hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:16]


def build_user_message(instruction: str, question: str) -> str:
    """The single user message: the question in ``{question}`` if present, else after a blank line."""
    if QUESTION_PLACEHOLDER in instruction:
        return instruction.replace(QUESTION_PLACEHOLDER, question.strip())
    return instruction.rstrip("\n") + "\n\n" + question.strip()


def build_messages(instruction: str, question: str) -> list[dict[str, str]]:
    """Chat messages for one rewriting request (one user turn, as in the paper; no system prompt)."""
    return [{"role": "user", "content": build_user_message(instruction, question)}]


@dataclass(frozen=True)
class ParsedReply:
    """The rewrite read from a reply, or why there is none (``status`` is ``"ok"`` when there is one)."""

    status: str
    rewrite: str | None
    reason: str


def strip_thinking(text: str) -> str:
    """Remove ``<think>`` sections; an unclosed one (reply cut off while thinking) removes the rest."""
    text = _THINK_RE.sub("", text)
    if "<think>" in text:
        text = text[: text.index("<think>")]
    if "</think>" in text:  # some servers strip the opening tag and leave the closing one
        text = text[text.rindex("</think>") + len("</think>") :]
    return text


def parse_reply(text: str | None) -> ParsedReply:
    """Extract the rewritten question from a model reply.

    Statuses: ``empty`` (no text, or an empty rewrite), ``unparsable`` (markers or label missing).
    """
    if text is None or not text.strip():
        return ParsedReply("empty", None, "reply is empty")
    body = strip_thinking(text)
    end = body.rfind(END_MARKER)
    if end == -1:
        if START_MARKER in body:
            return ParsedReply(
                "unparsable", None, f"{START_MARKER!r} without {END_MARKER!r} (reply cut off?)"
            )
        return ParsedReply("unparsable", None, f"no {START_MARKER!r} ... {END_MARKER!r} block in the reply")
    start = body.rfind(START_MARKER, 0, end)
    if start == -1:
        return ParsedReply("unparsable", None, f"{END_MARKER!r} without a preceding {START_MARKER!r}")
    block = body[start + len(START_MARKER) : end]
    if REWRITE_LABEL not in block:
        return ParsedReply("unparsable", None, f"no {REWRITE_LABEL!r} inside the result block")
    rewrite = block.split(REWRITE_LABEL, 1)[1].strip()
    if not rewrite:
        return ParsedReply("empty", None, f"nothing after {REWRITE_LABEL!r}")
    return ParsedReply("ok", rewrite, "")


def normalize_whitespace(text: str) -> str:
    """Collapse every whitespace run to one space and trim; used for the verbatim-copy check."""
    return _WS_RE.sub(" ", text).strip()
