"""On-disk records of an evaluation: per-sample JSONL that survives crashes, and atomic JSON files.

Sampling a benchmark can take hours, so ``corewarding eval`` appends every finished chunk of samples to
``samples/<benchmark>.jsonl`` (flushed) and, on restart, reads back what is there and samples only what is
missing. A crash can leave a half-written last line; it is dropped (and cut off before appending) rather
than treated as an error. A malformed line anywhere else means the file is not ours or was edited, and
is reported with its line number.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from corewarding.errors import DataError
from corewarding.evaluation.evaluate import Completion


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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


def _row_to_completion(row: Any, path: Path, line: int) -> Completion:
    def bad(field: str, expected: str) -> DataError:
        value = row.get(field) if isinstance(row, dict) else row
        return DataError(f"{path}, line {line}: field {field!r} = {value!r}; expected {expected}")

    if not isinstance(row, dict):
        raise bad("<row>", "a JSON object")
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


def read_samples(path: str | Path) -> tuple[list[Completion], int]:
    """Read a per-sample JSONL file: ``(completions, bytes of complete lines)``.

    A missing file is empty. Text after the last newline is a torn write from a crash: it is skipped and
    not counted in the byte length, so an appender can cut it off. Duplicate ``(question_id,
    sample_index)`` records keep the first. Answers and verdicts are not read back: they are recomputed.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    # Records are written as JSON + newline, so everything after the last newline is a torn write.
    complete = data[: data.rfind(b"\n") + 1]
    out: list[Completion] = []
    seen: set[tuple[str, int]] = set()
    for number, raw in enumerate(complete.split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err})") from err
        c = _row_to_completion(row, path, number)
        if (c.question_id, c.sample_index) not in seen:
            seen.add((c.question_id, c.sample_index))
            out.append(c)
    valid = len(complete)
    return out, valid


class SampleAppender:
    """Appends completions to a per-sample JSONL file, flushing after every chunk.

    Opening cuts the file to ``valid_bytes`` (from :func:`read_samples`) so a torn line from a crash is
    replaced rather than glued to the next record.
    """

    def __init__(self, path: str | Path, valid_bytes: int, golds: dict[str, str | None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.golds = golds or {}
        self._file: IO[str] = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._file.truncate(valid_bytes)
        self._file.seek(valid_bytes)

    def append(self, completions: list[Completion]) -> None:
        for c in completions:
            row = completion_to_row(c, self.golds.get(c.question_id))
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SampleAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
