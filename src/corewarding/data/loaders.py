"""``load_questions``: every training set and benchmark becomes a list of ``Question``s.

One entry point for all sources so the trainer, the evaluator and the rephraser never special-case
where questions came from. Reading lives in ``readers`` (formats, I/O errors) and row interpretation in
``rows`` (layouts, gold conventions); this module ties them together and checks the ids are unique.
"""

from __future__ import annotations

import os

from corewarding.data.question import SYSTEM_PROMPT, Question
from corewarding.data.readers import read_rows
from corewarding.data.rows import (
    ANSWER_FORMATS,
    DEFAULT_GOLD_FIELD,
    RowContext,
    detect_answer_format,
    detect_layout,
    flat_row_to_question,
    verl_row_to_question,
)
from corewarding.errors import ConfigError, DataError


def load_questions(
    source: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    question_field: str | None = None,
    gold_field: str | None = None,
    answer_format: str = "auto",
    name: str | None = None,
) -> list[Question]:
    """Load the questions of ``source``, in file order.

    ``source``: a ``.parquet`` / ``.jsonl`` / ``.json`` file, a ``shared:``-relative path, a folder written
    by ``datasets.save_to_disk`` or readable by ``datasets.load_dataset``, or a Hugging Face dataset name.
    ``split`` picks a split of a dataset (an error for a single file). ``limit`` keeps the first rows.

    Verl-layout rows (a ``prompt`` column) keep their chat as written, so ``system_prompt`` applies only
    to flat rows (question/problem + answer), whose chat is built by ``Question.from_text``.
    ``question_field`` forces the flat layout with that field as the question; ``gold_field`` reads the
    gold from that field instead of ``reward_model.ground_truth`` / ``answer``; ``answer_format`` says how
    a gold field is read (``auto``, ``plain``, ``gsm8k``, ``boxed``; see ``corewarding.data.rows``).

    Ids are ``f"{name}-{index}"`` with ``index`` = ``extra_info.index`` (verl) or the row position (flat)
    and ``name`` defaulting to ``<folder>/<file stem>`` (``math/train_original``, ``benchmarks/math500``)
    or the dataset name; ``extra`` holds the row's other fields plus ``index`` (and ``reward_style``).
    Any problem with the input raises one ``DataError`` naming the source, the row, the field and what
    was expected.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit: expected a positive integer or None, got {limit!r}")
    if answer_format not in ANSWER_FORMATS:
        raise ConfigError(f"answer_format: expected one of {list(ANSWER_FORMATS)}, got {answer_format!r}")

    raw = read_rows(source, split=split, limit=limit)
    layout, qfield = detect_layout(raw.columns, raw.origin, question_field)
    ctx = RowContext(
        origin=raw.origin,
        name=name or raw.name,
        locate=raw.locate,
        system_prompt=system_prompt,
        question_field=qfield,
        gold_field=gold_field,
    )
    if layout == "flat" or gold_field is not None:
        field = gold_field or DEFAULT_GOLD_FIELD
        ctx.answer_format = (
            detect_answer_format(raw.rows, field) if answer_format == "auto" else answer_format
        )
    convert = verl_row_to_question if layout == "verl" else flat_row_to_question
    questions = [convert(row, i, ctx) for i, row in enumerate(raw.rows)]
    _check_unique_ids(questions, ctx)
    return questions


def _check_unique_ids(questions: list[Question], ctx: RowContext) -> None:
    """Ids key rollout groups and pairs, so two rows with one index would silently merge; refuse."""
    seen: dict[str, int] = {}
    for i, q in enumerate(questions):
        if q.id in seen:
            raise DataError(
                f"{ctx.origin}: {ctx.locate(i)}: field 'extra_info.index': expected a unique index per row, "
                f"got {q.extra['index']!r}, already used by {ctx.locate(seen[q.id])}"
            )
        seen[q.id] = i
