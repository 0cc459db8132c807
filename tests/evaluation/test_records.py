"""Per-sample JSONL: crash-tolerant reading, appending after a torn line, atomic rewrites."""

from __future__ import annotations

import json

import pytest

from corewarding.errors import DataError
from corewarding.evaluation.evaluate import Completion
from corewarding.evaluation.records import (
    SampleAppender,
    completion_to_row,
    read_samples,
    write_json_atomic,
    write_jsonl_atomic,
)


def _c(qid: str, i: int, text: str = "x") -> Completion:
    return Completion(question_id=qid, sample_index=i, completion=text, num_tokens=3, truncated=i % 2 == 1)


def test_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "s.jsonl"
    assert read_samples(path) == ([], 0)
    with SampleAppender(path, 0, golds={"a": "5"}) as app:
        app.append([_c("a", 0), _c("a", 1, "é \\boxed{5}")])
        app.append([_c("b", 0)])
    rows, valid = read_samples(path)
    assert [(c.question_id, c.sample_index, c.completion, c.truncated) for c in rows] == [
        ("a", 0, "x", False),
        ("a", 1, "é \\boxed{5}", True),
        ("b", 0, "x", False),
    ]
    assert valid == path.stat().st_size
    first = json.loads(path.read_text().splitlines()[0])
    assert first["gold"] == "5" and first["answer"] is None and first["correct"] is None


def test_torn_last_line_is_dropped_and_cut_before_appending(tmp_path):
    path = tmp_path / "s.jsonl"
    good = json.dumps(completion_to_row(_c("a", 0))) + "\n"
    torn = json.dumps(completion_to_row(_c("a", 1)))[:25]
    path.write_text(good + torn)
    rows, valid = read_samples(path)
    assert [(c.question_id, c.sample_index) for c in rows] == [("a", 0)]
    assert valid == len(good.encode())
    # a complete JSON object without its newline is also an unfinished write
    path.write_text(good + json.dumps(completion_to_row(_c("a", 1))))
    assert len(read_samples(path)[0]) == 1

    with SampleAppender(path, valid) as app:
        app.append([_c("a", 1, "new")])
    rows, _ = read_samples(path)
    assert [(c.sample_index, c.completion) for c in rows] == [(0, "x"), (1, "new")]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_duplicates_keep_the_first(tmp_path):
    path = tmp_path / "s.jsonl"
    write_jsonl_atomic(
        path, [completion_to_row(_c("a", 0, "first")), completion_to_row(_c("a", 0, "second"))]
    )
    rows, _ = read_samples(path)
    assert [c.completion for c in rows] == ["first"]


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(completion_to_row(_c("a", 0))) + "\n{broken\n" + "{}\n")
    with pytest.raises(DataError, match=r"s\.jsonl, line 2: not valid JSON"):
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
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"line 1: field '{field}'"):
        read_samples(path)


def test_atomic_json_leaves_no_temporary_files(tmp_path):
    write_json_atomic(tmp_path / "deep" / "r.json", {"a": 1})
    write_json_atomic(tmp_path / "deep" / "r.json", {"a": 2})
    assert json.loads((tmp_path / "deep" / "r.json").read_text()) == {"a": 2}
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["r.json"]
