"""Built-in model names (``builtin:<name>``) that are built locally instead of downloaded.

Configs name a model by Hugging Face hub id or local directory; ``builtin:tiny-qwen3`` (a random tiny
Qwen3 with a tokenizer trained on MATH questions) and ``builtin:microworld`` (the micro-world's pretrained
base model) are built on first use and cached, so offline machines and CI have real models to run.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILTIN_PREFIX = "builtin:"


def cache_root() -> Path:
    """``$COREWARDING_CACHE`` or ``~/.cache/corewarding``."""
    return Path(os.environ.get("COREWARDING_CACHE", Path.home() / ".cache" / "corewarding")).expanduser()


def _math_texts(limit: int) -> list[str]:
    """Real MATH questions (and the system prompt): what the built-in tokenizers are trained on."""
    from corewarding.data import load_questions
    from corewarding.data.paths import shared_data_dir

    questions = load_questions(shared_data_dir() / "train" / "math" / "train_original.parquet", limit=limit)
    return [q.question for q in questions] + [m["content"] for m in questions[0].messages]


def _build_tiny_qwen3(out: Path) -> Path:
    from corewarding.models.tiny import build_tiny_model

    return build_tiny_model(out, _math_texts(3000))


def _build_random_qwen3_0_6b(out: Path) -> Path:
    """Qwen3-0.6B's shape (28 layers, 1024 wide, GQA 16/8, head 128) with random weights: a real-sized
    model for checking a GPU setup's memory and throughput without downloading anything."""
    from corewarding.models.tiny import build_tiny_model

    return build_tiny_model(
        out,
        _math_texts(7500),
        vocab_size=8192,
        hidden_size=1024,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=3072,
        max_position_embeddings=8192,
    )


def _build_microworld(out: Path) -> Path:
    from corewarding.microworld.base_model import get_base_model

    return Path(get_base_model(cache_dir=out.parent))


BUILDERS = {
    "tiny-qwen3": _build_tiny_qwen3,
    "random-qwen3-0.6b": _build_random_qwen3_0_6b,
    "microworld": _build_microworld,
}


def resolve_model_path(name_or_path: str) -> str:
    """Return a loadable model path: builtin names are built (once) into the cache; others pass through."""
    if not name_or_path.startswith(BUILTIN_PREFIX):
        return name_or_path
    name = name_or_path[len(BUILTIN_PREFIX) :]
    if name not in BUILDERS:
        from corewarding.errors import ConfigError

        raise ConfigError(f"unknown built-in model {name_or_path!r}; known: {sorted(BUILDERS)}")
    out = cache_root() / "models" / name
    if name == "microworld":
        return str(BUILDERS[name](out))
    if _is_built(out):
        return str(out)
    if _is_distributed_follower():
        # transformers' save_pretrained writes weights only on rank 0 once torch.distributed is up, so a
        # follower's build would lack them: rank 0 builds, the others wait for its published directory
        _wait_until_built(out)
        return str(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    BUILDERS[name](tmp)
    if not _is_built(tmp):
        raise RuntimeError(f"building {name_or_path} wrote no weights into {tmp}")
    try:
        tmp.replace(out)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def _is_built(path: Path) -> bool:
    """A published built-in: its config and at least one weights file."""
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def _is_distributed_follower() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def _wait_until_built(path: Path, timeout_s: float = 3600.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not _is_built(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not finish building {path} within {timeout_s:.0f} s")
        time.sleep(0.5)
