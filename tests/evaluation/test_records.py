"""Per-sample JSONL under the one file policy: torn last line dropped, damage elsewhere named by line."""

from __future__ import annotations

import json
import logging

import pytest

from corewarding.errors import DataError
from corewarding.evaluation import records
from corewarding.evaluation.evaluate import Completion
from corewarding.evaluation.records import completion_to_row, read_samples
from corewarding.files import JsonlAppender, atomic_write_jsonl


def _c(qid: str, i: int, text: str = "x") -> Completion:
    return Completion(question_id=qid, sample_index=i, completion=text, num_tokens=3, truncated=i % 2 == 1)


def _line(c: Completion) -> str:
    return json.dumps(completion_to_row(c)) + "\n"


def test_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "s.jsonl"
    assert read_samples(path) == []
    with JsonlAppender(path) as app:
        app.write([completion_to_row(_c("a", 0), "5"), completion_to_row(_c("a", 1, "é \\boxed{5}"), "5")])
        app.write([completion_to_row(_c("b", 0))])
    rows = read_samples(path)
    assert [(c.question_id, c.sample_index, c.completion, c.truncated) for c in rows] == [
        ("a", 0, "x", False),
        ("a", 1, "é \\boxed{5}", True),
        ("b", 0, "x", False),
    ]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["gold"] == "5" and first["answer"] is None and first["correct"] is None


def test_torn_last_line_is_dropped_reported_and_cut_before_appending(tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    good = _line(_c("a", 0))
    path.write_bytes(good.encode() + _line(_c("a", 1)).encode()[:25] + b"\xff")  # torn mid-write
    with caplog.at_level(logging.WARNING):
        rows = read_samples(path)
    assert [(c.question_id, c.sample_index) for c in rows] == [("a", 0)]
    assert "torn last line" in caplog.text and "s.jsonl" in caplog.text

    with JsonlAppender(path) as app:
        app.write([completion_to_row(_c("a", 1, "new"))])
    assert [(c.sample_index, c.completion) for c in read_samples(path)] == [(0, "x"), (1, "new")]
    assert path.read_text().endswith("\n") and all(json.loads(x) for x in path.read_text().splitlines())


def test_whole_unterminated_last_record_is_kept_and_terminated_by_the_appender(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(_line(_c("a", 0)) + _line(_c("a", 1)).rstrip("\n"))
    assert [c.sample_index for c in read_samples(path)] == [0, 1]
    with JsonlAppender(path) as app:
        app.write([completion_to_row(_c("a", 2))])
    assert [c.sample_index for c in read_samples(path)] == [0, 1, 2]


def test_duplicates_keep_the_first(tmp_path):
    path = tmp_path / "s.jsonl"
    atomic_write_jsonl(
        path, [completion_to_row(_c("a", 0, "first")), completion_to_row(_c("a", 0, "second"))]
    )
    assert [c.completion for c in read_samples(path)] == ["first"]


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(_line(_c("a", 0)) + "{broken\n" + _line(_c("a", 1)))
    with pytest.raises(DataError, match=r"s\.jsonl: line 2: not valid JSON"):
        read_samples(path)


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(_line(_c("a", 0)).encode() + b'{"question_id": "a\xff"}\n' + _line(_c("a", 1)).encode())
    with pytest.raises(DataError, match=r"s\.jsonl: line 2: bytes that are not UTF-8"):
        read_samples(path)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"question_id": 3, "sample_index": 0, "completion": "x"}, "question_id"),
        ({"question_id": "a", "sample_index": -1, "completion": "x"}, "sample_index"),
        ({"question_id": "a", "sample_index": True, "completion": "x"}, "sample_index"),
        ({"question_id": "a", "sample_index": 0, "completion": None}, "completion"),
    ],
)
def test_bad_fields_are_reported(tmp_path, row, field):
    path = tmp_path / "s.jsonl"
    path.write_text(_line(_c("a", 0)) + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"s\.jsonl: line 2: field '{field}'"):
        read_samples(path)


def test_no_private_file_writers_or_appenders_are_left():
    """The one file policy lives in corewarding.files; records only maps completions to rows."""
    for name in ("write_text_atomic", "write_json_atomic", "write_jsonl_atomic", "SampleAppender"):
        assert not hasattr(records, name), name
