"""Real tokenizers for the data tests, trained locally on shared questions (nothing is downloaded).

A byte-level BPE trained on a few hundred MATH questions, wrapped in ``PreTrainedTokenizerFast``: one copy
with a ChatML-style chat template, one without (the plain-rendering path). Its post-processor adds a BOS,
so the tests can see that templated prompts get no extra special tokens while plain ones do.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def _train_tokenizer(shared_data):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    table = pq.read_table(shared_data / "train" / "math" / "train_original.parquet", columns=["prompt"])
    texts = [row["prompt"][1]["content"] for row in table.slice(0, 400).to_pylist()]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def _wrap(tok, chat_template):
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok.__class__.from_str(tok.to_str()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped


@pytest.fixture(scope="session")
def trained_bpe(shared_data):
    return _train_tokenizer(shared_data)


@pytest.fixture(scope="session")
def chat_tokenizer(trained_bpe):
    """A real fast tokenizer with a ChatML-style chat template."""
    return _wrap(trained_bpe, CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def plain_tokenizer(trained_bpe):
    """The same tokenizer without a chat template (a base model's tokenizer)."""
    return _wrap(trained_bpe, None)
