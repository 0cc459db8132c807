"""save_questions_parquet: verl layout, atomic, and read back unchanged by the loaders."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from corewarding.data import (
    SYSTEM_PROMPT,
    Question,
    load_pairs,
    load_questions,
    save_questions_parquet,
)
from corewarding.errors import DataError


def _fields(q):
    return (q.question, q.messages, q.gold, q.source, q.extra)


def test_verl_round_trip_is_exact(tmp_path, shared_data):
    questions = load_questions(shared_data / "train/math/test.parquet", limit=200)
    path = save_questions_parquet(questions, tmp_path / "out" / "math_test.parquet")
    assert path == tmp_path / "out" / "math_test.parquet"
    schema = pq.read_schema(path)
    assert {"prompt", "reward_model", "data_source", "ability", "extra_info", "level", "type"} <= set(
        schema.names
    )
    again = load_questions(path, name="math/test")
    assert [q.id for q in again] == [q.id for q in questions]
    assert [_fields(q) for q in again] == [_fields(q) for q in questions]


def test_round_trip_keeps_unknown_gold_and_index(tmp_path, shared_data):
    openrs = load_questions(shared_data / "train/open-rs/train_original.parquet")
    subset = openrs[4300:4306]  # contains index 4303, whose ground truth is missing
    again = load_questions(
        save_questions_parquet(subset, tmp_path / "o.parquet"), name="open-rs/train_original"
    )
    assert [(q.id, q.gold) for q in again] == [(q.id, q.gold) for q in subset]
    assert again[3].gold is None


def test_flat_benchmark_round_trip(tmp_path, shared_data):
    math500 = load_questions(shared_data / "benchmarks/math500.jsonl", limit=50)
    again = load_questions(save_questions_parquet(math500, tmp_path / "m.parquet"))
    for a, b in zip(math500, again, strict=True):
        assert (b.question, b.messages, b.gold) == (a.question, a.messages, a.gold)
        assert b.extra["solution"] == a.extra["solution"]
        assert b.extra["index"] == a.extra["index"]
        assert b.extra["data_source"] == "benchmarks/math500"


def test_generated_questions_get_positions_as_index(tmp_path):
    made = [Question.from_text(id=f"q{i}", question=f"What is {i}+{i}?", gold=str(2 * i)) for i in range(4)]
    again = load_questions(save_questions_parquet(made, tmp_path / "world.parquet"))
    assert [q.gold for q in again] == ["0", "2", "4", "6"]
    assert [q.extra["index"] for q in again] == [0, 1, 2, 3]
    assert again[2].messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2+2?"},
    ]


def test_written_pairs_load_as_pairs(tmp_path, shared_data):
    root = shared_data / "train" / "dapo"
    pairs = load_pairs(root / "train_original.parquet", root / "train_rewrite_Qwen3-32B.parquet", limit=30)
    a = save_questions_parquet([p[0] for p in pairs], tmp_path / "a.parquet")
    b = save_questions_parquet([p[1] for p in pairs], tmp_path / "b.parquet")
    again = load_pairs(a, b)
    assert [(x.question, y.question, x.gold) for x, y in again] == [
        (x.question, y.question, x.gold) for x, y in pairs
    ]


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path, shared_data):
    path = tmp_path / "q.parquet"
    first = load_questions(shared_data / "benchmarks/aime24.jsonl")
    save_questions_parquet(first, path)
    save_questions_parquet(first[:5], path)
    assert len(load_questions(path)) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["q.parquet"]


def test_failed_write_keeps_previous_file(tmp_path, shared_data):
    path = tmp_path / "q.parquet"
    good = load_questions(shared_data / "benchmarks/aime24.jsonl", limit=3)
    save_questions_parquet(good, path)
    bad = [
        Question.from_text(id="a", question="x?", gold="1", extra={"difficulty": 3}),
        Question.from_text(id="b", question="y?", gold="2", extra={"difficulty": {"level": "hard"}}),
    ]
    with pytest.raises(DataError, match=r"field 'difficulty'"):
        save_questions_parquet(bad, path)
    assert [q.gold for q in load_questions(path)] == [q.gold for q in good]
    assert [p.name for p in tmp_path.iterdir()] == ["q.parquet"]


def test_empty_list_and_reserved_extra_keys(tmp_path):
    with pytest.raises(DataError, match="no questions to write"):
        save_questions_parquet([], tmp_path / "e.parquet")
    clash = Question.from_text(id="c", question="z?", gold="1", extra={"prompt": "oops"})
    with pytest.raises(DataError, match="extra key 'prompt'"):
        save_questions_parquet([clash], tmp_path / "c.parquet")
    assert not list(tmp_path.iterdir())
