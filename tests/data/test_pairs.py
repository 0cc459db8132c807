"""load_pairs: the shared original/rephrased training sets pair up; any misalignment is refused."""

from __future__ import annotations

import dataclasses

import pytest

from corewarding.data import ORIGINAL, REPHRASED, load_pairs, load_questions, save_questions_parquet
from corewarding.errors import ConfigError, DataError

REPHRASED_FILE = "train_rewrite_Qwen3-32B.parquet"


@pytest.mark.parametrize(("folder", "count"), [("math", 7500), ("dapo", 14109), ("open-rs", 6999)])
def test_shared_training_sets_pair(shared_data, folder, count):
    root = shared_data / "train" / folder
    pairs = load_pairs(root / "train_original.parquet", root / REPHRASED_FILE)
    assert len(pairs) == count
    for original, rephrased in pairs:
        assert original.gold == rephrased.gold
        assert original.extra["index"] == rephrased.extra["index"]
        assert original.extra["pair_id"] == rephrased.extra["pair_id"] == original.id
        assert (original.extra["view"], rephrased.extra["view"]) == (ORIGINAL, REPHRASED)
        assert original.id != rephrased.id
    assert original.id == f"{folder}/train_original-{original.extra['index']}"
    # The views really are different texts (MATH has 2 rows the rewriter returned unchanged).
    assert sum(a.question != b.question for a, b in pairs) >= count - 2


def test_limit_applies_to_both_views(shared_data):
    root = shared_data / "train" / "math"
    pairs = load_pairs(root / "train_original.parquet", root / REPHRASED_FILE, limit=10)
    assert len(pairs) == 10
    assert pairs[0][0].question.startswith("Let \\[f(x) = \\left\\{")
    assert pairs[0][1].question.startswith("A transportation company")


@pytest.fixture
def math_views(tmp_path, shared_data):
    """Copies of the first 20 MATH pairs, written back through save_questions_parquet."""
    root = shared_data / "train" / "math"
    originals = load_questions(root / "train_original.parquet", limit=20)
    rephrasings = load_questions(root / REPHRASED_FILE, limit=20)
    return tmp_path, originals, rephrasings


def _write(tmp_path, originals, rephrasings):
    a = save_questions_parquet(originals, tmp_path / "orig.parquet")
    b = save_questions_parquet(rephrasings, tmp_path / "reph.parquet")
    return a, b


def test_written_views_pair(math_views):
    tmp_path, originals, rephrasings = math_views
    pairs = load_pairs(*_write(tmp_path, originals, rephrasings))
    assert [(a.question, b.question) for a, b in pairs] == [
        (a.question, b.question) for a, b in zip(originals, rephrasings, strict=True)
    ]


def test_gold_mismatch_names_row_values_and_files(math_views):
    tmp_path, originals, rephrasings = math_views
    rephrasings[3] = dataclasses.replace(rephrasings[3], gold="999")
    a, b = _write(tmp_path, originals, rephrasings)
    with pytest.raises(DataError) as info:
        load_pairs(a, b)
    message = str(info.value)
    for fragment in (str(a), str(b), "row 3", f"{originals[3].gold!r} vs '999'", "'extra_info.index' 3 vs 3"):
        assert fragment in message, message


def test_index_mismatch_names_row_values_and_files(math_views):
    tmp_path, originals, rephrasings = math_views
    rephrasings[5], rephrasings[6] = rephrasings[6], rephrasings[5]  # shuffled rows: indexes disagree
    a, b = _write(tmp_path, originals, rephrasings)
    with pytest.raises(DataError) as info:
        load_pairs(a, b)
    message = str(info.value)
    for fragment in (str(a), str(b), "row 5", "'extra_info.index' 5 vs 6"):
        assert fragment in message, message


def test_length_mismatch_names_first_unpaired_row(math_views):
    tmp_path, originals, rephrasings = math_views
    a, b = _write(tmp_path, originals, rephrasings[:17])
    with pytest.raises(DataError) as info:
        load_pairs(a, b)
    message = str(info.value)
    for fragment in (str(a), str(b), "20 vs 17 rows", "row 17"):
        assert fragment in message, message


def test_mismatch_on_real_files_from_different_sets(shared_data):
    with pytest.raises(DataError, match="do not pair at row 0"):
        load_pairs(
            shared_data / "train/math/train_original.parquet",
            shared_data / "train/dapo/train_rewrite_Qwen3-32B.parquet",
        )


def test_one_name_for_both_views_is_refused(shared_data):
    root = shared_data / "train" / "math"
    with pytest.raises(ConfigError, match="same ids"):
        load_pairs(root / "train_original.parquet", root / REPHRASED_FILE, name="math")
