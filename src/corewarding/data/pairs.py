"""``load_pairs``: the (original, rephrased) question pairs Co-rewarding-I trains on.

Row i of the rephrased file is the rewrite of row i of the original. A silent misalignment would make
each view's majority answer reward rollouts of an *unrelated* question, which trains garbage without any
error, so pairing is checked strictly: equal row counts, equal ``extra_info.index`` and equal ground
truth in every row. The first violation raises a ``DataError`` naming the row, both values and both
files.
"""

from __future__ import annotations

import os
from typing import Any

from corewarding.data.loaders import load_questions
from corewarding.data.question import Question
from corewarding.errors import ConfigError, DataError

ORIGINAL = "original"
REPHRASED = "rephrased"


def load_pairs(
    original: str | os.PathLike,
    rephrased: str | os.PathLike,
    **load_kwargs: Any,
) -> list[tuple[Question, Question]]:
    """Load both views and pair them row by row.

    ``load_kwargs`` (``split``, ``limit``, ``system_prompt``, ...) go to ``load_questions`` for both
    files. Each question keeps its own id (``<file name>-<index>``); both share ``extra["pair_id"]`` (the
    original's id) and carry ``extra["view"]`` = ``"original"`` or ``"rephrased"``. ``name`` is refused:
    one name for both files would give both views the same ids.
    """
    if "name" in load_kwargs:
        raise ConfigError("load_pairs: 'name' would give both views the same ids; load each view separately")
    originals = load_questions(original, **load_kwargs)
    rephrasings = load_questions(rephrased, **load_kwargs)
    return pair_questions(originals, rephrasings, str(original), str(rephrased))


def pair_questions(
    originals: list[Question], rephrasings: list[Question], original_name: str, rephrased_name: str
) -> list[tuple[Question, Question]]:
    """Check that two loaded views align row by row and tag them as pairs (see ``load_pairs``)."""
    where = f"{original_name} (original) and {rephrased_name} (rephrased)"
    for row, (a, b) in enumerate(zip(originals, rephrasings, strict=False)):
        index_a, index_b = a.extra.get("index"), b.extra.get("index")
        if index_a != index_b or a.gold != b.gold:
            raise DataError(
                f"{where} do not pair at row {row}: field 'extra_info.index' {index_a!r} vs {index_b!r}, "
                f"field 'reward_model.ground_truth' {a.gold!r} vs {b.gold!r}; expected the same index and "
                "the same ground truth in both files"
            )
    if len(originals) != len(rephrasings):
        row = min(len(originals), len(rephrasings))
        raise DataError(
            f"{where} do not pair: {len(originals)} vs {len(rephrasings)} rows; row {row} exists in only "
            "one file; expected the same number of rows"
        )
    pairs = []
    for a, b in zip(originals, rephrasings, strict=True):
        a.extra["pair_id"] = b.extra["pair_id"] = a.id
        a.extra["view"], b.extra["view"] = ORIGINAL, REPHRASED
        pairs.append((a, b))
    return pairs
