"""The micro-world's tokenizer: whole words of its closed vocabulary, single digits, a chat template.

Why this shape: a sub-million-parameter model can only learn arithmetic if every digit is its own token
(so "37 + 28 = 65" is learnable digit by digit), and prompts must stay short (tens of tokens) for CPU
training, so every word of the world is one token. Words keep their leading space (" apples"), as in
GPT-style tokenizers, so decoding is exact concatenation. Text outside the world still encodes: an
unknown word falls back to single characters (a BPE model with no merges and ``ignore_merges``), and
only characters outside printable ASCII become ``<|unk|>``.

The result is an ordinary ``PreTrainedTokenizerFast`` with bos/eos/pad tokens and a ChatML chat template
like Qwen's, so ``apply_chat_template(messages, add_generation_prompt=True)`` works exactly as for a real
chat model and nothing downstream special-cases the micro-world.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from corewarding.data.question import SYSTEM_PROMPT
from corewarding.microworld.problems import vocabulary_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK, IM_START = "<|startoftext|>", "<|im_end|>", "<|endoftext|>", "<|unk|>", "<|im_start|>"
SPECIAL_TOKENS = (PAD, BOS, IM_START, EOS, UNK)
# Split: the box opener, a word or one other non-space character with its optional leading space (" apples",
# " +", "."), one digit, or one whitespace character. Order matters: the first alternative that matches wins.
PRETOKENIZE_PATTERN = r" ?\\boxed\{| ?[A-Za-z]+| ?[^\sA-Za-z\d]|\d|\s"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant")


def _base_texts() -> list[str]:
    from corewarding.microworld.world import MICRO_SYSTEM_PROMPT

    return [*vocabulary_texts(), MICRO_SYSTEM_PROMPT, SYSTEM_PROMPT, *ROLES, "\\boxed{1}"]


def build_tokenizer(world_or_texts: Any = None) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer for the world's closed vocabulary.

    ``world_or_texts`` adds words beyond the built-in sentence forms: a ``MicroWorld`` (its system prompt
    and all its questions) or any iterable of strings. The vocabulary is sorted, so the same inputs give
    the same token ids on every machine.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    texts: list[str] = _base_texts()
    if world_or_texts is not None:
        texts.extend(_texts_of(world_or_texts))
    pre = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    words = {piece for text in texts for piece, _ in pre.pre_tokenize_str(text)}
    chars = set(string.ascii_letters + string.digits + string.punctuation + " \n\t")
    ordered = [*SPECIAL_TOKENS, *sorted(chars), *sorted(words - chars)]
    vocab = {tok: i for i, tok in enumerate(ordered)}

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _texts_of(source: Any) -> Iterable[str]:
    if hasattr(source, "all_texts"):
        return source.all_texts()
    if isinstance(source, str):
        return [source]
    return list(source)
