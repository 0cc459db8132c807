"""The offline micro-world: a synthetic task, its tokenizer and a tiny pretrained base model.

It lets the whole method run on a CPU in minutes with nothing downloaded: multi-step arithmetic word
problems with rephrased views (``problems``, ``world``), a word-level tokenizer with a chat template
(``tokenizer``), and a small Qwen3 pretrained to be imperfect the way base LLMs are (``base_model``).
Everything it produces is ordinary — ``Question`` records, verl parquet files, a Hugging Face model
directory — so training and evaluation run through the same code as on real data.

Importing this package is cheap: torch and transformers are imported only when a model is built.
"""

from corewarding.microworld.base_model import PretrainConfig, get_base_model, pretrain_base_model
from corewarding.microworld.problems import Problem, generate_problems, solution_text
from corewarding.microworld.tokenizer import build_tokenizer
from corewarding.microworld.world import MICRO_SYSTEM_PROMPT, MicroWorld, WorldConfig, build_world

__all__ = [
    "MICRO_SYSTEM_PROMPT",
    "MicroWorld",
    "PretrainConfig",
    "Problem",
    "WorldConfig",
    "build_tokenizer",
    "build_world",
    "generate_problems",
    "get_base_model",
    "pretrain_base_model",
    "solution_text",
]
