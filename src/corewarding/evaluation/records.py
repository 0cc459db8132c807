"""On-disk records of an evaluation: the per-sample JSONL rows and reading them back for a resume.

Sampling a benchmark can take hours, so ``corewarding eval`` appends every finished chunk of samples to
``samples/<benchmark>.jsonl`` (a :class:`corewarding.files.JsonlAppender`, fsynced per chunk) and, on
restart, reads back what is there and samples only what is missing. Reading follows the one rule of
:mod:`corewarding.files`: a torn last line left by a crash is dropped and reported (and the appender cuts it
before writing), while damage anywhere else, or bytes that are not UTF-8, is a :class:`DataError` naming
the file and line, because it means the file is not ours or was edited and guessing could mix samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corewarding.errors import DataError
from corewarding.evaluation.evaluate import Completion
from corewarding.files import read_jsonl


def completion_to_row(c: Completion, gold: str | None = None) -> dict[str, Any]:
    """The per-sample JSONL record: ids, the completion, and (once scored) its answer and verdict."""
    return {
        "question_id": c.question_id,
        "sample_index": c.sample_index,
        "completion": c.completion,
        "answer": c.answer,
        "gold": gold,
        "correct": c.correct,
        "num_tokens": c.num_tokens,
        "truncated": c.truncated,
    }


def _row_to_completion(row: dict[str, Any], path: Path, line: int) -> Completion:
    def bad(field: str, expected: str) -> DataError:
        return DataError(f"{path}: line {line}: field {field!r} = {row.get(field)!r}; expected {expected}")

    qid, idx, text = row.get("question_id"), row.get("sample_index"), row.get("completion")
    if not isinstance(qid, str):
        raise bad("question_id", "a string")
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise bad("sample_index", "a non-negative integer")
    if not isinstance(text, str):
        raise bad("completion", "a string")
    tokens = row.get("num_tokens", 0)
    return Completion(
        question_id=qid,
        sample_index=idx,
        completion=text,
        num_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        truncated=bool(row.get("truncated", False)),
    )


def read_samples(path: str | Path) -> list[Completion]:
    """The completions in a per-sample JSONL file (a missing file holds none).

    A torn last line is dropped (see the module docstring). Duplicate ``(question_id, sample_index)``
    records keep the first, so a resume never counts a sample twice. Answers and verdicts are not read
    back: they are recomputed, so a change in the answer engine applies to old samples too.
    """
    path = Path(path)
    contents = read_jsonl(path, "evaluation samples")
    out: list[Completion] = []
    seen: set[tuple[str, int]] = set()
    for row, number in zip(contents.rows, contents.line_numbers, strict=True):
        c = _row_to_completion(row, path, number)
        if (c.question_id, c.sample_index) not in seen:
            seen.add((c.question_id, c.sample_index))
            out.append(c)
    return out
