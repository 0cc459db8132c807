"""Questions in, questions out: loading, pairing, prompt rendering, length filtering and writing.

Everything downstream (rollout, rewards, training, evaluation) sees only ``Question`` objects or
``(original, rephrased)`` pairs of them, whatever file or dataset they came from.
"""

from corewarding.data.boxed import last_boxed
from corewarding.data.filtering import filter_by_prompt_length, filter_pairs_by_prompt_length
from corewarding.data.loaders import load_questions
from corewarding.data.pairs import ORIGINAL, REPHRASED, load_pairs, pair_questions
from corewarding.data.paths import resolve_data_path, shared_data_dir
from corewarding.data.prompting import has_chat_template, prompt_lengths, prompt_token_ids, render_prompt
from corewarding.data.question import SYSTEM_PROMPT, Question
from corewarding.data.writers import save_questions_parquet

__all__ = [
    "ORIGINAL",
    "REPHRASED",
    "SYSTEM_PROMPT",
    "Question",
    "filter_by_prompt_length",
    "filter_pairs_by_prompt_length",
    "has_chat_template",
    "last_boxed",
    "load_pairs",
    "load_questions",
    "pair_questions",
    "prompt_lengths",
    "prompt_token_ids",
    "render_prompt",
    "resolve_data_path",
    "save_questions_parquet",
    "shared_data_dir",
]
