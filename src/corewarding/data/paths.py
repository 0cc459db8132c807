"""Where the reference data lives.

The shared data folder sits beside the project checkout (``../shared/data``); ``COREWARDING_DATA_DIR``
points anywhere else. Every default path in configs and the benchmark registry goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """The reference data folder: ``$COREWARDING_DATA_DIR`` or ``<project>/../shared/data``."""
    env = os.environ.get("COREWARDING_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return (_PROJECT_ROOT.parent / "shared" / "data").resolve()


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Resolve ``path``; a path starting with ``shared:`` is taken relative to :func:`shared_data_dir`."""
    text = str(path)
    if text.startswith("shared:"):
        return shared_data_dir() / text[len("shared:") :].lstrip("/")
    return Path(text).expanduser()
