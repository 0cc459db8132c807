"""How a chat becomes the prompt a model sees: the one rendering that rollout, evaluation and filtering share.

If filtering measured prompts one way and the rollout engine fed them another way, "at most
``max_prompt_length`` tokens" would be a lie, and evaluation could score a different prompt than training
used. So every consumer calls these functions:

* ``render_prompt(tokenizer, messages) -> str``: the tokenizer's chat template with
  ``add_generation_prompt=True`` when it has one; otherwise a plain rendering for base models without a
  template: the message contents joined by a blank line, then a newline (``"system\\n\\nuser\\n"``).
* ``prompt_token_ids(tokenizer, conversations) -> list[list[int]]``: the token ids of those renderings.
  With a chat template the template writes any special tokens, so the text is tokenized without adding
  more (exactly ``apply_chat_template(..., tokenize=True)``); a plain rendering is tokenized with the
  tokenizer's usual special tokens (e.g. a BOS), as a base model expects at the start of its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Messages = list[dict[str, str]]

_BATCH = 512  # conversations per tokenizer call: fast batched encoding without huge transient lists


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template (a string, or a dict of named templates)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_plain(messages: Messages) -> str:
    """The template-free rendering: contents joined by a blank line, ending with a newline."""
    return "\n\n".join(m["content"] for m in messages) + "\n"


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt text for ``messages``: chat template (with generation prompt) when present, else plain."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return render_plain(messages)


def prompt_token_ids(tokenizer: Any, conversations: Sequence[Messages]) -> list[list[int]]:
    """Token ids of each conversation's rendered prompt (see the module docstring for special tokens)."""
    ids: list[list[int]] = []
    templated = has_chat_template(tokenizer)
    for start in range(0, len(conversations), _BATCH):
        batch = list(conversations[start : start + _BATCH])
        if templated:
            out = tokenizer.apply_chat_template(
                batch, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            out = tokenizer([render_plain(m) for m in batch], add_special_tokens=True)["input_ids"]
        ids.extend(list(x) for x in out)
    return ids


def prompt_lengths(tokenizer: Any, conversations: Sequence[Messages]) -> list[int]:
    """Number of prompt tokens of each conversation, as ``prompt_token_ids`` counts them."""
    return [len(x) for x in prompt_token_ids(tokenizer, conversations)]
