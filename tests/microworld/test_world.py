"""World splits, Co-rewarding-I pairs, and the parquet files read back by the project's loaders."""

from __future__ import annotations

import pytest

from corewarding.data import load_pairs, load_questions
from corewarding.microworld.world import FILE_NAMES, MICRO_SYSTEM_PROMPT, WorldConfig, build_world


@pytest.fixture(scope="module")
def world():
    return build_world(seed=3, n_train=120, n_val=30, n_test=40)


def test_same_seed_same_world_other_seed_differs(world):
    again = build_world(seed=3, n_train=120, n_val=30, n_test=40)
    other = build_world(seed=4, n_train=120, n_val=30, n_test=40)
    assert [q.question for q in again.test] == [q.question for q in world.test]
    assert world.problems == again.problems
    assert [q.question for q in other.test] != [q.question for q in world.test]


def test_splits_are_cut_by_underlying_problem(world):
    sizes = {name: len(problems) for name, problems in world.problems.items()}
    assert sizes == {"train": 120, "val": 30, "test": 40}
    keys = {name: {p.key for p in problems} for name, problems in world.problems.items()}
    assert sum(len(k) for k in keys.values()) == 190  # distinct within and across splits
    assert (
        not keys["train"] & keys["test"]
        and not keys["train"] & keys["val"]
        and not keys["val"] & keys["test"]
    )
    assert len(world.keys()) == 190


def test_questions_are_ordinary_records_with_short_system_prompt(world):
    for q, p in zip(world.test, world.problems["test"], strict=True):
        assert q.gold == str(p.answer)
        assert q.question == p.text
        assert q.messages == [
            {"role": "system", "content": MICRO_SYSTEM_PROMPT},
            {"role": "user", "content": p.text},
        ]
        assert q.extra["view"] == "original"
    assert len({q.id for q in world.train + world.val + world.test}) == 190


def test_train_pairs_share_pair_id_index_and_gold(world):
    assert len(world.train_pairs) == 120
    for k, (original, rephrased) in enumerate(world.train_pairs):
        assert original.extra["pair_id"] == rephrased.extra["pair_id"]
        assert original.extra["index"] == rephrased.extra["index"] == k
        assert (original.extra["view"], rephrased.extra["view"]) == ("original", "rephrased")
        assert original.gold == rephrased.gold
        assert original.question != rephrased.question
        assert original.id != rephrased.id
    second = world.questions("train", "rephrased", rephrasing=1)
    assert [q.question for q in second] == [p.rephrasings[1] for p in world.problems["train"]]


def test_unknown_split_or_view_is_refused(world):
    with pytest.raises(ValueError, match="split"):
        world.questions("dev")
    with pytest.raises(ValueError, match="view"):
        world.questions("train", "paraphrase")


def test_written_parquet_reads_back_through_the_project_loaders(world, tmp_path):
    written = world.write(tmp_path)
    assert sorted(p.name for p in written.values()) == sorted(FILE_NAMES.values())
    pairs = load_pairs(written["train_original"], written["train_rephrased"])
    assert [(a.question, b.question, a.gold) for a, b in pairs] == [
        (a.question, b.question, a.gold) for a, b in world.train_pairs
    ]
    for a, b in pairs:
        assert a.extra["pair_id"] == b.extra["pair_id"]
    for split in ("val", "test"):
        loaded = load_questions(written[split])
        expected = getattr(world, split)
        assert [(q.messages, q.gold) for q in loaded] == [(q.messages, q.gold) for q in expected]


def test_fingerprint_names_the_config():
    assert WorldConfig().fingerprint() == WorldConfig().fingerprint()
    assert WorldConfig(seed=1).fingerprint() != WorldConfig().fingerprint()
