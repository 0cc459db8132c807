"""The rephrased view of a question set, for Co-rewarding-I (``corewarding rephrase``).

``prompt`` (the paper's instruction and reply parsing), ``numbers`` and ``judge`` (what counts as an
acceptable rewrite), ``backends`` (HTTP endpoint, local engines), ``pipeline`` (attempts, retries, answer
check, resumable state in crash-safe JSONL through ``corewarding.files``, aligned outputs) and ``cli``.
"""

from corewarding.rephrase.judge import Verdict, judge_reply
from corewarding.rephrase.numbers import missing_numbers
from corewarding.rephrase.prompt import build_messages, default_instruction, load_instruction, parse_reply

__all__ = [
    "Verdict",
    "build_messages",
    "default_instruction",
    "judge_reply",
    "load_instruction",
    "missing_numbers",
    "parse_reply",
]
