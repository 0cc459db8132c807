"""The benchmark registry resolves names to the shared files, and accepts overrides and custom files."""

from __future__ import annotations

import shutil

import pytest

from corewarding.data import load_questions
from corewarding.errors import ConfigError
from corewarding.evaluation.benchmarks import (
    DEFAULT_BENCHMARKS,
    REGISTRY,
    parse_assignments,
    resolve_benchmarks,
)

EXPECTED_ROWS = {"math500": 500, "gsm8k": 1319, "amc": 83, "amc23": 40, "aime24": 30, "aime25": 30}


def test_every_registered_benchmark_resolves_and_loads(shared_data):
    benches = resolve_benchmarks(",".join(REGISTRY), 4)
    assert [b.name for b in benches] == list(REGISTRY)
    for b in benches:
        assert b.path == shared_data / "benchmarks" / REGISTRY[b.name].filename
        assert b.n == 4 and b.registered
        questions = load_questions(b.path)
        assert len(questions) == EXPECTED_ROWS[b.name], b.name
        assert all(q.gold for q in questions), b.name
        assert questions[0].messages[-1]["role"] == "user"
    assert set(DEFAULT_BENCHMARKS) <= set(REGISTRY)


def test_gold_answers_of_the_shared_benchmarks(shared_data):
    golds = {b.name: load_questions(b.path, limit=1)[0].gold for b in resolve_benchmarks(list(REGISTRY), 1)}
    assert golds["gsm8k"] == "18"  # after "####"
    assert golds["amc"] == "142.0"
    assert golds["aime25"] == "70"
    assert "\\frac{\\pi}{2}" in golds["math500"]  # last \boxed{} of the solution


def test_overrides_data_dir_and_custom_files(shared_data, tmp_path):
    custom = tmp_path / "mine.jsonl"
    shutil.copy(shared_data / "benchmarks" / "aime24.jsonl", custom)
    benches = resolve_benchmarks(
        ["math500", str(custom), "amc"],
        8,
        files={"math500": str(custom)},
        n_for={"mine": 2, "amc": 16},
    )
    assert [(b.name, b.path, b.n, b.registered) for b in benches] == [
        ("math500", custom, 8, True),
        ("mine", custom, 2, False),
        ("amc", shared_data / "benchmarks" / "amc_ttt.parquet", 16, True),
    ]
    # --data-dir accepts the data folder or its benchmarks/ folder
    folder = tmp_path / "data" / "benchmarks"
    folder.mkdir(parents=True)
    shutil.copy(shared_data / "benchmarks" / "aime25.jsonl", folder / "aime25.jsonl")
    assert resolve_benchmarks("aime25", 1, data_dir=folder)[0].path == folder / "aime25.jsonl"
    assert resolve_benchmarks("aime25", 1, data_dir=tmp_path / "data")[0].path == folder / "aime25.jsonl"
    # a verl parquet file works as a custom benchmark too
    verl = resolve_benchmarks(str(shared_data / "train" / "math" / "test.parquet"), 1)[0]
    assert verl.name == "test" and not verl.registered


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": "math5000"}, "neither a known benchmark"),
        ({"names": "aime24", "data_dir": "/nonexistent"}, "file not found: /nonexistent/aime24.jsonl"),
        ({"names": "aime24", "n_for": {"amc": 2}}, "--n-for: amc not among"),
        ({"names": "aime24", "files": {"gsm8k": "/x.jsonl"}}, "--benchmark-file: gsm8k not among"),
        ({"names": "aime24,aime24"}, "both be called 'aime24'"),
        ({"names": "aime24", "n_for": {"aime24": 0}}, "must be >= 1"),
        ({"names": " , "}, "no benchmark given"),
    ],
)
def test_errors_say_what_is_wrong(shared_data, kwargs, message):
    names = kwargs.pop("names")
    with pytest.raises(ConfigError, match=message):
        resolve_benchmarks(names, 1, **kwargs)


def test_parse_assignments():
    assert parse_assignments(["a=1,b = 2", "c=x=y"], "--n-for") == {"a": "1", "b": "2", "c": "x=y"}
    assert parse_assignments(None, "--n-for") == {}
    with pytest.raises(ConfigError, match="--n-for: expected NAME=VALUE, got 'a'"):
        parse_assignments(["a"], "--n-for")
