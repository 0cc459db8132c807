"""Hugging Face datasets as sources, offline: save_to_disk folders, load_dataset folders, hub names."""

from __future__ import annotations

import json
import shutil

import pytest

from corewarding.data import load_questions
from corewarding.errors import DataError

datasets = pytest.importorskip("datasets")


def _math500_rows(shared_data, n=20):
    lines = (shared_data / "benchmarks/math500.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


def _core(questions):
    return [(q.question, q.messages, q.gold, q.extra["index"]) for q in questions]


def test_saved_dataset_folder(tmp_path, shared_data):
    folder = tmp_path / "math500_disk"
    datasets.Dataset.from_list(_math500_rows(shared_data)).save_to_disk(str(folder))
    questions = load_questions(folder)
    expected = load_questions(shared_data / "benchmarks/math500.jsonl", limit=20)
    assert _core(questions) == _core(expected)
    assert questions[0].id == "math500_disk-0"
    assert len(load_questions(folder, limit=4)) == 4
    with pytest.raises(DataError, match="has no splits"):
        load_questions(folder, split="test")


def test_saved_dataset_dict_needs_a_split(tmp_path, shared_data):
    rows = _math500_rows(shared_data)
    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:12]), "test": datasets.Dataset.from_list(rows[12:])}
    ).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"has splits \['train', 'test'\]; pass split="):
        load_questions(folder)
    with pytest.raises(DataError, match=r"no split 'validation'"):
        load_questions(folder, split="validation")
    test = load_questions(folder, split="test")
    assert [q.question for q in test] == [r["question"] for r in rows[12:]]
    assert test[0].id == "dd:test-0"


def test_load_dataset_folder_of_parquet_files(tmp_path, shared_data):
    folder = tmp_path / "amc_repo" / "data"
    folder.mkdir(parents=True)
    shutil.copy(shared_data / "benchmarks/amc_ttt.parquet", folder / "test-00000-of-00001.parquet")
    questions = load_questions(tmp_path / "amc_repo", split="test")
    expected = load_questions(shared_data / "benchmarks/amc_ttt.parquet")
    assert len(questions) == 83
    assert _core(questions) == _core(expected)


def test_load_dataset_folder_of_jsonl(tmp_path, shared_data):
    folder = tmp_path / "gsm_repo"
    folder.mkdir()
    shutil.copy(shared_data / "benchmarks/gsm8k_test.jsonl", folder / "test.jsonl")
    questions = load_questions(folder, split="test", limit=10)
    assert [q.gold for q in questions] == [
        q.gold for q in load_questions(shared_data / "benchmarks/gsm8k_test.jsonl", limit=10)
    ]


def test_folder_that_is_no_dataset(tmp_path):
    folder = tmp_path / "empty_folder"
    folder.mkdir()
    with pytest.raises(DataError, match="cannot load as a Hugging Face dataset"):
        load_questions(folder)


def test_unknown_hub_name_offline_is_one_data_error():
    with pytest.raises(DataError, match="no-such-owner/no-such-dataset: not a local file or folder") as info:
        load_questions("no-such-owner/no-such-dataset")
    assert "\n" not in str(info.value)
