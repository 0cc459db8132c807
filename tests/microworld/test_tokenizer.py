"""The micro-world tokenizer: exact round trips, single-digit tokens, a working chat template."""

from __future__ import annotations

import pytest

from corewarding.microworld.tokenizer import BOS, EOS, PAD, build_tokenizer
from corewarding.microworld.world import build_world


@pytest.fixture(scope="module")
def world():
    return build_world(seed=2, n_train=60, n_val=10, n_test=10)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def test_every_world_text_round_trips_without_unknown_tokens(world, tokenizer):
    texts = list(world.all_texts())
    assert len(texts) > 200
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text


def test_vocabulary_is_small_with_whole_words_and_single_digits(world, tokenizer):
    assert len(tokenizer) < 400
    for text in world.all_texts():
        for token in tokenizer.tokenize(text):
            if any(c.isdigit() for c in token):
                assert len(token) == 1, token
    assert tokenizer.tokenize(" apples") == [" apples"]
    assert tokenizer.tokenize("37 + 28 = 65") == ["3", "7", " +", " ", "2", "8", " =", " ", "6", "5"]
    assert tokenizer.tokenize("\\boxed{12}") == ["\\boxed{", "1", "2", "}"]


def test_text_outside_the_world_falls_back_to_characters(tokenizer):
    text = "Quantum zebras 12 ~ x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id in tokenizer("π", add_special_tokens=False)["input_ids"]


def test_chat_template_renders_system_user_and_generation_prompt(world, tokenizer):
    q = world.test[0]
    text = tokenizer.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"{BOS}<|im_start|>system\n{q.messages[0]['content']}{EOS}\n"
        f"<|im_start|>user\n{q.question}{EOS}\n<|im_start|>assistant\n"
    )
    ids = tokenizer.apply_chat_template(q.messages, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[-3:]) == "<|im_start|>assistant\n"
    assert len(ids) < 100  # prompts stay short: tens of tokens
    without = tokenizer.apply_chat_template(q.messages, add_generation_prompt=False, tokenize=False)
    assert not without.endswith("assistant\n")


def test_special_tokens(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    ids = tokenizer("done.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id  # special tokens are never split
    assert tokenizer.decode(ids, skip_special_tokens=True) == "done."


def test_same_inputs_same_ids_and_saved_tokenizer_loads_with_auto(world, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    assert build_tokenizer(world).get_vocab() == tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    q = world.train_pairs[0][1]
    expected = tokenizer.apply_chat_template(q.messages, add_generation_prompt=True, return_dict=False)
    assert loaded.apply_chat_template(q.messages, add_generation_prompt=True, return_dict=False) == expected
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (BOS, EOS, PAD)
    assert loaded.decode(expected[-20:]) == tokenizer.decode(expected[-20:])
