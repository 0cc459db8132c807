"""Prompt rendering and the prompt-length filters, with a real locally trained tokenizer."""

from __future__ import annotations

import logging

import pytest

from corewarding.data import (
    filter_by_prompt_length,
    filter_pairs_by_prompt_length,
    load_pairs,
    load_questions,
    prompt_lengths,
    prompt_token_ids,
    render_prompt,
)
from corewarding.errors import ConfigError


@pytest.fixture(scope="module")
def math_test(shared_data):
    return load_questions(shared_data / "train/math/test.parquet", limit=400)


@pytest.fixture(scope="module")
def math_pairs(shared_data):
    root = shared_data / "train" / "math"
    return load_pairs(root / "train_original.parquet", root / "train_rewrite_Qwen3-32B.parquet", limit=600)


def test_render_prompt_uses_the_chat_template(chat_tokenizer, math_test):
    q = math_test[0]
    text = render_prompt(chat_tokenizer, q.messages)
    assert text == (
        f"<|im_start|>system\n{q.messages[0]['content']}<|im_end|>\n"
        f"<|im_start|>user\n{q.question}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_render_prompt_plain_without_template(plain_tokenizer, math_test):
    q = math_test[0]
    assert render_prompt(plain_tokenizer, q.messages) == f"{q.messages[0]['content']}\n\n{q.question}\n"
    user_only = [{"role": "user", "content": "1+1?"}]
    assert render_prompt(plain_tokenizer, user_only) == "1+1?\n"


def test_token_ids_match_apply_chat_template(chat_tokenizer, math_test):
    ids = prompt_token_ids(chat_tokenizer, [q.messages for q in math_test[:40]])
    for q, got in zip(math_test[:40], ids, strict=True):
        expected = chat_tokenizer.apply_chat_template(
            q.messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert got == list(expected)
        # The template writes its own markers; no BOS is added on top.
        assert got[0] == chat_tokenizer.convert_tokens_to_ids("<|im_start|>")
        assert (
            got
            == chat_tokenizer(render_prompt(chat_tokenizer, q.messages), add_special_tokens=False)[
                "input_ids"
            ]
        )


def test_plain_token_ids_carry_the_tokenizers_special_tokens(plain_tokenizer, math_test):
    q = math_test[1]
    (ids,) = prompt_token_ids(plain_tokenizer, [q.messages])
    assert ids[0] == plain_tokenizer.bos_token_id
    assert ids == plain_tokenizer(render_prompt(plain_tokenizer, q.messages))["input_ids"]
    assert plain_tokenizer.decode(ids, skip_special_tokens=True) == render_prompt(plain_tokenizer, q.messages)


@pytest.mark.parametrize("which", ["chat_tokenizer", "plain_tokenizer"])
def test_filter_keeps_exactly_the_prompts_that_fit(request, which, math_test, caplog):
    tokenizer = request.getfixturevalue(which)
    lengths = [len(prompt_token_ids(tokenizer, [q.messages])[0]) for q in math_test]  # one at a time
    max_len = sorted(lengths)[len(lengths) // 2]
    with caplog.at_level(logging.INFO, logger="corewarding.data.filtering"):
        kept, dropped = filter_by_prompt_length(math_test, tokenizer, max_len)
    expected = [q for q, n in zip(math_test, lengths, strict=True) if n <= max_len]
    assert [q.id for q in kept] == [q.id for q in expected]
    assert dropped == len(math_test) - len(expected) > 0
    assert f"dropped {dropped} of {len(math_test)} questions" in caplog.text


def test_filter_boundary_is_inclusive(chat_tokenizer, math_test):
    q = math_test[7]
    (n,) = prompt_lengths(chat_tokenizer, [q.messages])
    assert filter_by_prompt_length([q], chat_tokenizer, n) == ([q], 0)
    assert filter_by_prompt_length([q], chat_tokenizer, n - 1) == ([], 1)
    assert filter_by_prompt_length(math_test, chat_tokenizer, 10**6) == (math_test, 0)


def test_pair_filter_drops_both_views_when_either_is_too_long(chat_tokenizer, math_pairs):
    lengths = prompt_lengths(chat_tokenizer, [q.messages for pair in math_pairs for q in pair])
    orig, reph = lengths[0::2], lengths[1::2]
    # Pick a budget between the two views of the first pair whose rephrasing is the longer one.
    k = next(i for i, (a, b) in enumerate(zip(orig, reph, strict=True)) if b > a)
    max_len = orig[k]
    kept, dropped = filter_pairs_by_prompt_length(math_pairs, chat_tokenizer, max_len)
    kept_ids = {a.id for a, _ in kept}
    assert math_pairs[k][0].id not in kept_ids  # the original fits, but its partner does not
    expected = [p for p, a, b in zip(math_pairs, orig, reph, strict=True) if a <= max_len and b <= max_len]
    assert kept == expected
    assert dropped == len(math_pairs) - len(expected)
    assert all(a.extra["pair_id"] == b.extra["pair_id"] for a, b in kept)
    # Dropping pairs drops more than filtering the originals alone would.
    _, dropped_originals = filter_by_prompt_length([a for a, _ in math_pairs], chat_tokenizer, max_len)
    assert dropped > dropped_originals


@pytest.mark.parametrize("bad", [0, -5, 1.5, None])
def test_bad_max_len_is_a_config_error(chat_tokenizer, math_test, bad):
    with pytest.raises(ConfigError, match="max_prompt_length"):
        filter_by_prompt_length(math_test[:2], chat_tokenizer, bad)
    with pytest.raises(ConfigError, match="max_prompt_length"):
        filter_pairs_by_prompt_length([], chat_tokenizer, bad)
