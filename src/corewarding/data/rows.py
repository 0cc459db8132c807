"""Turn raw rows into ``Question``s: the two row layouts and the gold-answer conventions.

Two layouts exist in practice and are told apart by their field names:

* **verl** (a ``prompt`` column): ``prompt`` is the chat (system + user), ``reward_model.ground_truth``
  the gold, ``extra_info.index`` the row's stable index. The chat is kept exactly as written.
* **flat** (a ``question`` or ``problem`` field): the chat is built with ``Question.from_text`` and the
  gold comes from ``answer`` according to the file's *answer format*:

  - ``plain``: the value is the answer (``"204"``; ``27.0`` becomes ``"27.0"``, never re-formatted);
  - ``gsm8k``: the answer follows the last ``####``; thousands separators (``1,600``) are removed;
  - ``boxed``: the value is a full solution and the gold is its last ``\\boxed{}`` (MATH-500).

  ``auto`` decides from the first row with a text answer and then holds every row to that choice, so a
  solution that lacks its ``####``/``\\boxed{}`` fails loudly instead of becoming a wrong gold.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corewarding.data.boxed import last_boxed
from corewarding.data.question import Question
from corewarding.errors import DataError

ANSWER_FORMATS = ("auto", "plain", "gsm8k", "boxed")
QUESTION_FIELDS = ("question", "problem")
DEFAULT_GOLD_FIELD = "answer"

_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")


@dataclass
class RowContext:
    """What converting a row needs besides the row: where it came from and how to read it."""

    origin: str
    name: str
    locate: Callable[[int], str]
    system_prompt: str | None
    question_field: str | None = None  # flat layout only
    gold_field: str | None = None  # overrides reward_model.ground_truth / "answer"
    answer_format: str = "plain"  # resolved: plain | gsm8k | boxed

    def error(self, i: int, field: str, expected: str, value: Any = ..., got: str | None = None) -> DataError:
        """A ``DataError`` naming the source, the row, the field, what was expected and what was found."""
        if got is None:
            got = "nothing (field missing)" if value is ... else f"{type(value).__name__} {_short(value)}"
        return DataError(f"{self.origin}: {self.locate(i)}: field '{field}': expected {expected}, got {got}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detect_layout(columns: list[str], origin: str, question_field: str | None) -> tuple[str, str | None]:
    """Return ``("verl", None)`` or ``("flat", question_field)`` from the source's field names."""
    if question_field is not None:
        if question_field not in columns:
            raise DataError(f"{origin}: no field '{question_field}' (question_field); found fields {columns}")
        return "flat", question_field
    if "prompt" in columns:
        return "verl", None
    for field in QUESTION_FIELDS:
        if field in columns:
            return "flat", field
    raise DataError(
        f"{origin}: no question field; expected 'prompt' (verl layout) or one of {list(QUESTION_FIELDS)}, "
        f"found fields {columns}"
    )


def detect_answer_format(rows: list[dict[str, Any]], gold_field: str) -> str:
    """``gsm8k`` if the first text answer has a ``####`` line, ``boxed`` if it has a box, else ``plain``."""
    for row in rows:
        value = row.get(gold_field)
        if isinstance(value, str):
            if "####" in value:
                return "gsm8k"
            if last_boxed(value) is not None:
                return "boxed"
            return "plain"
    return "plain"


def gold_from_value(value: Any, fmt: str, ctx: RowContext, i: int, field: str) -> str | None:
    """The gold string a field value stands for under answer format ``fmt`` (``None`` stays unknown)."""
    if value is None:
        return None
    if fmt == "plain":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ctx.error(i, field, "an answer (string or number)", value)
        return value if isinstance(value, str) else str(value)
    if not isinstance(value, str):
        raise ctx.error(i, field, f"a solution text ({fmt} answer format)", value)
    if fmt == "gsm8k":
        if "####" not in value:
            raise ctx.error(i, field, "a solution ending in '#### <answer>' (gsm8k answer format)", value)
        answer = value.rsplit("####", 1)[1].strip()
        if _THOUSANDS_RE.fullmatch(answer):
            answer = answer.replace(",", "")
        if not answer:
            raise ctx.error(i, field, "an answer after '####'", got="nothing after '####'")
        return answer
    answer = last_boxed(value)
    if answer is None:
        raise ctx.error(i, field, "a solution containing \\boxed{...} (boxed answer format)", value)
    return answer


def _index(row: dict[str, Any], ctx: RowContext, i: int) -> tuple[int, dict[str, Any] | None]:
    """``extra_info.index`` (the row position when the file has none) and the ``extra_info`` dict."""
    info = row.get("extra_info")
    if info is None:
        return i, None
    if not isinstance(info, dict):
        raise ctx.error(i, "extra_info", "an object with an integer 'index'", info)
    index = info.get("index")
    if index is None:
        return i, info
    if isinstance(index, bool) or not isinstance(index, int):
        raise ctx.error(i, "extra_info.index", "an integer", index)
    return index, info


def _messages(row: dict[str, Any], ctx: RowContext, i: int) -> tuple[list[dict[str, str]], str]:
    """The chat from ``prompt`` as written, and the text of its last user message."""
    if "prompt" not in row:
        raise ctx.error(i, "prompt", "a list of chat messages")
    prompt = row["prompt"]
    if not isinstance(prompt, list | tuple) or not prompt:
        raise ctx.error(i, "prompt", "a non-empty list of chat messages", prompt)
    messages = []
    for k, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise ctx.error(i, f"prompt[{k}]", "a message object with 'role' and 'content'", message)
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ctx.error(i, f"prompt[{k}]", "string 'role' and 'content'", message)
        messages.append({"role": role, "content": content})
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise ctx.error(i, "prompt", "a chat with a non-empty user message", prompt)
    return messages, users[-1]


def verl_row_to_question(row: dict[str, Any], i: int, ctx: RowContext) -> Question:
    """A verl-layout row: chat from ``prompt``, gold from ``reward_model.ground_truth``."""
    messages, question = _messages(row, ctx, i)
    extra = {k: v for k, v in row.items() if k not in ("prompt", "reward_model")}
    if ctx.gold_field is not None:
        if ctx.gold_field not in row:
            raise ctx.error(i, ctx.gold_field, "the gold answer (gold_field)")
        gold = gold_from_value(row[ctx.gold_field], ctx.answer_format, ctx, i, ctx.gold_field)
    else:
        reward_model = row.get("reward_model", ...)
        if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
            raise ctx.error(i, "reward_model", "an object with 'ground_truth'", reward_model)
        gold = gold_from_value(reward_model["ground_truth"], "plain", ctx, i, "reward_model.ground_truth")
        if reward_model.get("style") is not None:
            extra["reward_style"] = reward_model["style"]
    index, _ = _index(row, ctx, i)
    extra["index"] = index
    return Question(
        id=f"{ctx.name}-{index}",
        question=question,
        messages=messages,
        gold=gold,
        source=ctx.name,
        extra=extra,
    )


def flat_row_to_question(row: dict[str, Any], i: int, ctx: RowContext) -> Question:
    """A flat row (question/problem + answer): chat built from the system prompt and the question."""
    qfield = ctx.question_field or QUESTION_FIELDS[0]
    if qfield not in row:
        raise ctx.error(i, qfield, "the question text")
    question = row[qfield]
    if not isinstance(question, str) or not question.strip():
        raise ctx.error(i, qfield, "a non-empty question string", question)
    gfield = ctx.gold_field or DEFAULT_GOLD_FIELD
    if gfield not in row:
        raise ctx.error(i, gfield, "the gold answer")
    raw = row[gfield]
    gold = gold_from_value(raw, ctx.answer_format, ctx, i, gfield)
    # Other fields stay as extra; a second question field holding the same text is dropped, and a full
    # solution the gold was cut from is kept as "solution" (unless the row already has one).
    extra = {
        k: v
        for k, v in row.items()
        if k not in (qfield, gfield) and not (k in QUESTION_FIELDS and v == question)
    }
    if ctx.answer_format != "plain" and raw is not None:
        extra[gfield if "solution" in row else "solution"] = raw
    index, _ = _index(row, ctx, i)
    extra["index"] = index
    return Question.from_text(
        id=f"{ctx.name}-{index}",
        question=question,
        gold=gold,
        source=ctx.name,
        system_prompt=ctx.system_prompt,
        extra=extra,
    )
