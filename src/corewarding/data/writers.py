"""``save_questions_parquet``: write questions in the verl layout that ``load_questions`` reads back.

The rephraser and the micro-world produce ``Question``s; writing them in the same layout as the shared
training files means every later step (pairing, filtering, training, verl itself) reads them unchanged.
The write goes through ``corewarding.files.atomic_output`` (temporary file, fsync, rename) so an interrupted
run never leaves a half file and a failed one leaves the previous file as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corewarding.data.question import Question
from corewarding.errors import DataError
from corewarding.files import atomic_output

# Keys of ``Question.extra`` that map onto verl columns rather than becoming columns of their own.
_MAPPED_KEYS = ("data_source", "ability", "extra_info", "index", "reward_style")
_VERL_COLUMNS = ("prompt", "reward_model", "data_source", "ability", "extra_info")


def question_to_row(q: Question, position: int) -> dict[str, Any]:
    """The verl row for ``q``: the inverse of ``corewarding.data.rows.verl_row_to_question``.

    ``extra_info.index`` is ``extra["index"]`` (the row position when absent) so pairs and ids survive a
    round trip; other ``extra`` keys become top-level columns (``level``, ``solution``, ``pair_id``...).
    """
    extra = q.extra
    info = dict(extra.get("extra_info") or {})
    info["index"] = extra.get("index", position)
    row: dict[str, Any] = {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in q.messages],
        "reward_model": {"ground_truth": q.gold, "style": extra.get("reward_style", "rule")},
        "data_source": extra.get("data_source", q.source),
        "ability": extra.get("ability", "math"),
        "extra_info": info,
    }
    for key, value in extra.items():
        if key in _MAPPED_KEYS:
            continue
        if key in _VERL_COLUMNS:
            raise DataError(
                f"question {q.id}: extra key '{key}' would overwrite the verl column of that name"
            )
        row[key] = value
    return row


def save_questions_parquet(questions: list[Question], path: str | os.PathLike) -> Path:
    """Write ``questions`` to ``path`` (verl parquet layout, atomically); return the path written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not questions:
        raise DataError(f"{path}: no questions to write; a question file must have at least one row")
    rows = [question_to_row(q, i) for i, q in enumerate(questions)]
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for key, values in columns.items():
        values.extend(row.get(key) for row in rows)
    try:
        table = pa.table(columns)
    except (pa.ArrowException, TypeError, UnicodeEncodeError) as exc:  # mixed types; a lone surrogate
        bad = _first_bad_column(columns)
        raise DataError(
            f"{path}: field '{bad}': expected values of one parquet-compatible type in every row ({exc})"
        ) from exc
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _first_bad_column(columns: dict[str, list[Any]]) -> str:
    import pyarrow as pa

    for key, values in columns.items():
        try:
            pa.array(values)
        except (pa.ArrowException, TypeError, UnicodeEncodeError):
            return key
    return "?"
