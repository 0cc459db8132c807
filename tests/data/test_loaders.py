"""load_questions on the real shared data: counts, golds, chats, ids, extras, options."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from corewarding.data import SYSTEM_PROMPT, load_questions
from corewarding.errors import ConfigError

BENCHMARK_COUNTS = {
    "benchmarks/math500.jsonl": 500,
    "benchmarks/gsm8k_test.jsonl": 1319,
    "benchmarks/aime24.jsonl": 30,
    "benchmarks/aime25.jsonl": 30,
    "benchmarks/amc23.jsonl": 40,
    "benchmarks/amc_ttt.parquet": 83,
    "train/math/test.parquet": 5000,
}


@pytest.mark.parametrize(("relpath", "count"), BENCHMARK_COUNTS.items())
def test_benchmark_counts_and_unique_ids(shared_data, relpath, count):
    questions = load_questions(shared_data / relpath)
    assert len(questions) == count
    assert len({q.id for q in questions}) == count
    assert all(
        q.question.strip() and q.messages[-1] == {"role": "user", "content": q.question} for q in questions
    )


def test_verl_parquet_keeps_chat_gold_and_extras(shared_data):
    path = shared_data / "train/math/test.parquet"
    raw = pq.read_table(path).slice(0, 50).to_pylist()
    questions = load_questions(path, limit=50)
    assert len(questions) == 50
    for row, q in zip(raw, questions, strict=True):
        assert q.messages == [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        assert q.question == row["prompt"][1]["content"]
        assert q.gold == row["reward_model"]["ground_truth"]
        assert q.id == f"math/test-{row['extra_info']['index']}"
        assert q.source == "math/test"
        assert q.extra["index"] == row["extra_info"]["index"]
        assert q.extra["extra_info"] == row["extra_info"]
        assert (q.extra["level"], q.extra["type"]) == (row["level"], row["type"])
        assert q.extra["data_source"] == row["data_source"]
        assert "prompt" not in q.extra and "reward_model" not in q.extra
    assert questions[0].gold == "2"
    assert questions[0].question.startswith("How many vertical asymptotes")


def test_verl_chat_is_kept_even_with_another_system_prompt(shared_data):
    q = load_questions(shared_data / "benchmarks/amc_ttt.parquet", limit=1, system_prompt="other")[0]
    assert q.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert q.gold == "142.0"
    assert q.extra["extra_info"]["source"] == "amc"


def test_math500_gold_is_last_box_of_solution(shared_data):
    questions = load_questions(shared_data / "benchmarks/math500.jsonl")
    assert questions[0].gold == r"\left( 3, \frac{\pi}{2} \right)"
    assert questions[0].question.startswith("Convert the point $(0,3)$")
    # Independent check: every solution repeats its answer after "The answer is: ".
    for q in questions:
        assert q.gold == q.extra["solution"].rsplit("The answer is: ", 1)[1].strip(), q.id
    # A solution with two boxes: the last one is the answer.
    two_boxes = [q for q in questions if q.extra["solution"].count("\\boxed") > 1]
    assert r"\frac{639}{40}" in {q.gold for q in two_boxes}


def test_gsm8k_gold_after_hashes_without_thousands_commas(shared_data):
    questions = load_questions(shared_data / "benchmarks/gsm8k_test.jsonl")
    assert questions[0].gold == "18"
    assert questions[0].question.startswith("Janet’s ducks lay 16 eggs")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", q.gold) for q in questions)
    assert questions[146].extra["solution"].endswith("#### 2,125")
    assert questions[146].gold == "2125"


def test_flat_rows_get_the_standard_chat(shared_data):
    q = load_questions(shared_data / "benchmarks/aime24.jsonl", limit=1)[0]
    assert q.messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": q.question},
    ]
    assert q.gold == "204"
    assert q.id == "benchmarks/aime24-0"
    assert q.extra["id"] == 60 and q.extra["index"] == 0
    assert "problem" not in q.extra and "question" not in q.extra  # the duplicate question text is dropped
    assert q.question.startswith("Every morning Aya goes for a $9$-kilometer-long walk")

    bare = load_questions(shared_data / "benchmarks/aime24.jsonl", limit=1, system_prompt=None)[0]
    assert bare.messages == [{"role": "user", "content": q.question}]
    custom = load_questions(shared_data / "benchmarks/aime24.jsonl", limit=1, system_prompt="Be brief.")[0]
    assert custom.messages[0] == {"role": "system", "content": "Be brief."}


def test_aime25_and_amc23_golds_kept_as_written(shared_data):
    aime25 = load_questions(shared_data / "benchmarks/aime25.jsonl")
    assert aime25[0].gold == "70"
    assert all(q.gold.isdigit() for q in aime25)
    amc23 = load_questions(shared_data / "benchmarks/amc23.jsonl")
    assert amc23[0].gold == "27.0"
    raw = [json.loads(line) for line in (shared_data / "benchmarks/amc23.jsonl").read_text().splitlines()]
    assert [q.gold for q in amc23] == [str(r["answer"]) for r in raw]
    assert "-1.0" in {q.gold for q in amc23}


def test_openrs_row_without_ground_truth_has_gold_none(shared_data):
    questions = load_questions(shared_data / "train/open-rs/train_original.parquet")
    assert len(questions) == 6999
    missing = [q for q in questions if q.gold is None]
    assert [q.extra["index"] for q in missing] == [4303]


def test_options_limit_fields_format_name_and_shared_prefix(shared_data):
    assert len(load_questions(shared_data / "benchmarks/gsm8k_test.jsonl", limit=7)) == 7
    assert len(load_questions(shared_data / "train/dapo/train_original.parquet", limit=3)) == 3

    as_problem = load_questions(shared_data / "benchmarks/aime25.jsonl", question_field="problem", limit=2)
    assert (
        as_problem[1].question
        == json.loads((shared_data / "benchmarks/aime25.jsonl").read_text().splitlines()[1])["problem"]
    )

    plain = load_questions(shared_data / "benchmarks/gsm8k_test.jsonl", answer_format="plain", limit=1)[0]
    assert plain.gold.endswith("#### 18") and "solution" not in plain.extra

    sol = load_questions(
        shared_data / "benchmarks/aime24.jsonl", gold_field="solution", answer_format="plain", limit=1
    )[0]
    assert sol.gold.startswith("$\\frac{9}{s} + t = 4$") and sol.extra["answer"] == "204"

    named = load_questions(shared_data / "benchmarks/amc23.jsonl", name="amc23", limit=2)
    assert [q.id for q in named] == ["amc23-0", "amc23-1"] and named[0].source == "amc23"

    via_prefix = load_questions("shared:benchmarks/aime24.jsonl")
    assert via_prefix == load_questions(shared_data / "benchmarks/aime24.jsonl")


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit_is_a_config_error(shared_data, limit):
    with pytest.raises(ConfigError, match="limit"):
        load_questions(shared_data / "benchmarks/aime24.jsonl", limit=limit)


def test_unknown_answer_format_is_a_config_error(shared_data):
    with pytest.raises(ConfigError, match="answer_format"):
        load_questions(shared_data / "benchmarks/aime24.jsonl", answer_format="latex")
