"""Append-only JSONL files that survive being killed: the resume state and the raw-generation log.

Rephrasing a training set takes hours of paid or GPU time, so a crash or a ``kill -9`` must lose at most
the rows in flight. Each finished row is one JSON line, written with ``flush`` + ``fsync`` before the row
counts as done. A process killed mid-write leaves at most one torn last line; :func:`read_jsonl` ignores
it and :func:`open_append` cuts it off before appending, so the next line never fuses with the fragment.
A broken line anywhere *else* is not a crash artefact but corruption, and is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from corewarding.errors import DataError


def _complete_prefix_length(path: Path) -> int:
    """Bytes of ``path`` up to and including its last newline (the part made of whole lines)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb") as f:
        chunk = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            nl = data.rfind(b"\n")
            if nl != -1:
                return start + nl + 1
            pos = start
    return 0


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict[str, Any]], bool]:
    """The records of ``path`` and whether a torn (unterminated) last line was skipped.

    A missing file reads as no records. Every terminated line must be a JSON object; a bad one raises a
    ``DataError`` naming the file and the line, because silently skipping it could drop a finished row.
    """
    path = Path(path)
    if not path.exists():
        return [], False
    keep = _complete_prefix_length(path)
    torn = keep < path.stat().st_size
    records: list[dict[str, Any]] = []
    with path.open("rb") as f:
        data = f.read(keep)
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: line {lineno}: expected a JSON object, got {raw[:80]!r} ({err.msg}); the file is "
                "corrupt beyond a torn last line — delete it (or rerun with --restart) to start over"
            ) from err
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records, torn


def open_append(path: str | os.PathLike) -> IO[str]:
    """Open ``path`` for appending lines, first cutting off a torn last line left by a killed writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        keep = _complete_prefix_length(path)
        if keep < path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(keep)
    return path.open("a", encoding="utf-8")


class JsonlWriter:
    """Appends one JSON object per line; ``durable=True`` fsyncs each line (for the resume state)."""

    def __init__(self, path: str | os.PathLike, durable: bool):
        self.path = Path(path)
        self.durable = durable
        self._file = open_append(self.path)

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Append ``records``; with ``durable`` one fsync covers them all (a group commit)."""
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            if self.durable:
                os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
