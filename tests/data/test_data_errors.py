"""Bad input: every case is one DataError naming the file, the field and what was expected."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corewarding.data import load_questions
from corewarding.errors import DataError


def _verl_rows(shared_data, n=5):
    return pq.read_table(shared_data / "train/math/test.parquet").slice(0, n).to_pylist()


def _write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _raises(path, *fragments, **kwargs):
    with pytest.raises(DataError) as info:
        load_questions(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.parquet", "no such file")
    _raises(tmp_path / "nope.jsonl", "no such file")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("question,answer\n1+1,2\n")
    _raises(path, "unsupported file type '.csv'", ".parquet")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    _raises(path, "cannot read as parquet")


def test_empty_files(tmp_path, shared_data):
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("\n\n")
    _raises(empty_jsonl, "no rows")
    empty_parquet = tmp_path / "empty.parquet"
    schema = pq.read_schema(shared_data / "train/math/test.parquet")
    pq.write_table(schema.empty_table(), empty_parquet)
    _raises(empty_parquet, "no rows")
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]")
    _raises(empty_list, "no rows")


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n\n{"question": "2+2?", "answer": \n')
    _raises(path, "line 3", "not valid JSON", "one JSON object per line")


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n[1, 2]\n')
    _raises(path, "line 2", "expected a JSON object", "got list")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"question": "caf\u00e9", "answer": "1"}\n'.encode("latin-1"))
    _raises(path, "not UTF-8")


def test_missing_question_column(tmp_path, shared_data):
    rows = [{k: v for k, v in r.items() if k != "prompt"} for r in _verl_rows(shared_data)]
    _raises(
        _write_parquet(tmp_path / "noprompt.parquet", rows), "no question field", "'prompt'", "'question'"
    )


def test_missing_reward_model_column(tmp_path, shared_data):
    rows = [{k: v for k, v in r.items() if k != "reward_model"} for r in _verl_rows(shared_data)]
    _raises(
        _write_parquet(tmp_path / "nogold.parquet", rows),
        "row 0",
        "'reward_model'",
        "ground_truth",
        "missing",
    )


def test_missing_answer_field_in_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?"}])
    _raises(path, "line 2", "field 'answer'", "expected the gold answer", "missing")


def test_missing_question_field_in_later_jsonl_row(tmp_path):
    path = _write_jsonl(
        tmp_path / "q.jsonl", [{"question": "1+1?", "answer": "2"}, {"problem": "x", "answer": "3"}]
    )
    _raises(path, "line 2", "field 'question'", "missing")


def test_wrong_type_prompt(tmp_path, shared_data):
    rows = _verl_rows(shared_data)
    rows = [{**r, "prompt": r["prompt"][1]["content"]} for r in rows]
    _raises(
        _write_parquet(tmp_path / "strprompt.parquet", rows),
        "row 0",
        "field 'prompt'",
        "list of chat messages",
    )


def test_prompt_without_user_message(tmp_path, shared_data):
    rows = _verl_rows(shared_data)
    rows = [{**r, "prompt": r["prompt"][:1]} for r in rows]
    _raises(_write_parquet(tmp_path / "nouser.parquet", rows), "row 0", "field 'prompt'", "user message")


def test_wrong_type_ground_truth(tmp_path, shared_data):
    rows = _verl_rows(shared_data)
    rows = [{**r, "reward_model": {"ground_truth": ["1", "2"], "style": "rule"}} for r in rows]
    _raises(
        _write_parquet(tmp_path / "listgold.parquet", rows),
        "row 0",
        "field 'reward_model.ground_truth'",
        "string or number",
        "list",
    )


def test_wrong_type_index(tmp_path, shared_data):
    rows = _verl_rows(shared_data)
    rows = [{**r, "extra_info": {"index": str(i), "split": "test"}} for i, r in enumerate(rows)]
    _raises(
        _write_parquet(tmp_path / "strindex.parquet", rows), "row 0", "field 'extra_info.index'", "an integer"
    )


def test_duplicate_index(tmp_path, shared_data):
    rows = _verl_rows(shared_data)
    rows[3]["extra_info"] = dict(rows[1]["extra_info"])
    _raises(_write_parquet(tmp_path / "dup.parquet", rows), "row 3", "unique index", "row 1")


def test_wrong_type_question_and_answer(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", [{"question": 12, "answer": "2"}])
    _raises(path, "line 1", "field 'question'", "non-empty question string", "int 12")
    path = _write_jsonl(tmp_path / "b.jsonl", [{"question": "Is it?", "answer": True}])
    _raises(path, "line 1", "field 'answer'", "string or number", "bool True")


def test_gsm8k_style_row_without_hashes(tmp_path):
    rows = [{"question": "a?", "answer": "so 3\n#### 3"}, {"question": "b?", "answer": "the answer is 4"}]
    _raises(_write_jsonl(tmp_path / "g.jsonl", rows), "line 2", "field 'answer'", "'#### <answer>'")


def test_boxed_style_row_without_box(tmp_path):
    rows = [{"question": "a?", "answer": "so $\\boxed{3}$"}, {"question": "b?", "answer": "it is 4"}]
    _raises(_write_jsonl(tmp_path / "m.jsonl", rows), "line 2", "field 'answer'", "\\boxed{...}")


def test_split_with_a_single_file(shared_data):
    _raises(shared_data / "benchmarks/aime24.jsonl", "split='test'", "no splits", split="test")


def test_json_list_with_a_non_object(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"question": "a?", "answer": "1"}, "b?"]))
    _raises(path, "item 1", "expected a JSON object")


def test_json_list_file_loads(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"question": "a?", "answer": 1}, {"question": "b?", "answer": 2.5}]))
    assert [q.gold for q in load_questions(path)] == ["1", "2.5"]
