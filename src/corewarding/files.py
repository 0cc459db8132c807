"""One policy for files on disk: atomic writes, durable appends, and one rule for reading JSONL.

Every command that writes or reads its own files goes through here, so a kill at any instant leaves each
file either as it was or as it should be:

- **Whole files** (configs, summaries, results, plots, parquet) are written to a temporary file in the same
  folder, fsynced, and renamed over the target (``os.replace``): a reader sees the old file or the new one,
  never half of either. A failed write removes its temporary file and leaves the target untouched.
- **Logs** (``metrics.jsonl``, evaluation samples, the rephrase journal) are appended one JSON object per
  line, flushed and (``durable=True``) fsynced before the caller goes on.
- **Reading a JSONL file**: a *torn last line* (the unterminated tail of a write cut short by a crash) is
  dropped and reported with a warning; damage anywhere else (a terminated line that is not a JSON object,
  bytes that are not UTF-8) is a :class:`DataError` naming the file and the line, because skipping it
  could silently lose a record. An unterminated last line that *is* a whole JSON object (a file written by
  hand without a final newline) is kept. An appender opened on such a file first cuts the torn tail (or
  terminates the whole last line), so the next record never glues onto it.

Output locations are checked before any work starts (:func:`require_output_dir`,
:func:`require_output_file`): a path that is a regular file where a folder is wanted, or a folder that
cannot be written, is one clear error naming the setting and the path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corewarding.errors import CorewardingError, DataError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------- whole files
def fsync_dir(directory: PathLike) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error, publish it as ``path``.

    For writers that want a file name (``pyarrow.parquet.write_table``, ``savefig``, ``save_file``). The
    temporary name keeps ``path``'s suffix so that libraries choosing a format by suffix still do.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
    except OSError as err:
        raise CorewardingError(f"{target}: cannot write ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600; the published file gets the mode a plain open() would (or the old file's)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it to read it,
    which for an instant would affect files other threads create)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, newline-terminated) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` as a whole JSONL file atomically (replacing, not appending)."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ------------------------------------------------------------------------------------------------ reading
def read_text(path: PathLike, what: str = "text") -> str:
    """A UTF-8 file's text, or a :class:`DataError` naming the file and where its bytes stop being UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder; expected a file of {what}") from None
    except OSError as err:
        raise DataError(f"{p}: cannot read ({err.strerror or err})") from None
    return decode_utf8(data, p, what)


def decode_utf8(data: bytes, path: PathLike, what: str = "text") -> str:
    """``data`` decoded as UTF-8, or a :class:`DataError` naming the line and byte that are not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line}: byte {data[err.start : err.start + 1]!r} at offset {err.start} is not UTF-8; "
            f"expected UTF-8 {what}"
        ) from None


@dataclass
class JsonlContents:
    """What :func:`read_jsonl` found: the records (with their 1-based line numbers) and the torn tail."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    torn_bytes: int = 0  # size of the dropped torn last line (0: none)
    valid_bytes: int = 0  # length of the prefix holding whole lines: where an appender continues

    @property
    def torn(self) -> bool:
        return self.torn_bytes > 0


def read_jsonl(path: PathLike, what: str = "records", limit: int | None = None) -> JsonlContents:
    """Read a JSONL file under the one rule (module docstring). A missing file reads as no records.

    ``limit`` stops after that many records (the rest of the file is not checked). Blank lines are skipped.
    """
    p = Path(path)
    if not p.exists():
        return JsonlContents()
    try:
        data = p.read_bytes()
    except OSError as err:
        raise DataError(f"{p}: cannot read ({err.strerror or err})") from None
    out = JsonlContents(valid_bytes=len(data))
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail.strip():
        record = _parse_object(tail)
        if record is None:
            out.torn_bytes = len(tail)
            out.valid_bytes = len(data) - len(tail)
            log.warning(
                "%s: dropped a torn last line (%d bytes without a newline, left by an interrupted write)",
                p,
                len(tail),
            )
        else:
            lines.append(tail)
    for number, raw in enumerate(lines, start=1):
        if limit is not None and len(out.rows) >= limit:
            break
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{p}: line {number}: bytes that are not UTF-8 ({err.reason}); expected {what}"
            ) from None
        except RecursionError:
            raise DataError(f"{p}: line {number}: JSON nested too deeply to read; expected {what}") from None
        except json.JSONDecodeError as err:
            raise DataError(
                f"{p}: line {number}: not valid JSON ({err.msg} at column {err.colno}); expected one JSON "
                f"object per line ({what}). Only an unterminated last line is dropped as a torn write; this "
                "file is damaged elsewhere"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{p}: line {number}: expected a JSON object ({what}), got {type(row).__name__}")
        out.rows.append(row)
        out.line_numbers.append(number)
    return out


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------- appending
class JsonlAppender:
    """Appends JSON objects, one per line, to ``path``; ``durable=True`` fsyncs after each :meth:`write`.

    Opening first cuts a torn last line (or terminates a whole unterminated one), so a record is never
    glued onto a crash's leftovers. One :meth:`write` of many records is one fsync (a group commit).
    """

    def __init__(self, path: PathLike, durable: bool = True):
        self.path = Path(path)
        self.durable = durable
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[bytes] = open(self.path, "ab+")  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise CorewardingError(f"{self.path}: cannot append ({err.strerror or err})") from None
        size = self._file.seek(0, os.SEEK_END)
        if size:
            self._file.seek(size - 1)
            if self._file.read(1) != b"\n":
                contents = read_jsonl(self.path)
                if contents.torn:
                    self._file.truncate(contents.valid_bytes)
                else:
                    self._file.write(b"\n")
        self._file.seek(0, os.SEEK_END)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` (flushed, and fsynced when durable) before returning."""
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not payload:
            return
        self._file.write(payload.encode("utf-8"))
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            if self.durable:
                os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_jsonl(path: PathLike, records: Iterable[dict[str, Any]], durable: bool = True) -> None:
    """Append ``records`` to ``path`` (opened and closed for this call): for one line a step."""
    with JsonlAppender(path, durable=durable) as out:
        out.write(records)


def rewrite_jsonl(path: PathLike, keep, what: str = "records") -> int:
    """Keep only the records of ``path`` for which ``keep(record)`` is true, atomically; how many were dropped
    (a torn last line is dropped too, and reported). A missing file is left missing."""
    p = Path(path)
    if not p.exists():
        return 0
    contents = read_jsonl(p, what)
    kept = [r for r in contents.rows if keep(r)]
    atomic_write_jsonl(p, kept)
    return len(contents.rows) - len(kept)


# --------------------------------------------------------------------------------------- output locations
def require_output_dir(path: PathLike, setting: str) -> Path:
    """Create the output folder ``path`` (and its parents) and prove it can be written, before any work.

    ``setting`` names where the path came from (``trainer.output_dir``, ``--out``) for the error message.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CorewardingError(
            f"{setting}={str(p)!r} is a regular file; expected a folder (or a path to create)"
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise CorewardingError(
            f"{setting}={str(p)!r}: a part of the path is a regular file; expected a folder"
        ) from None
    except OSError as err:
        raise CorewardingError(f"{setting}={str(p)!r}: cannot write there ({err.strerror or err})") from None
    return p


def require_output_file(path: PathLike, setting: str) -> Path:
    """Check that the file ``path`` can be written (its folder is created): not a folder, folder writable."""
    p = Path(path)
    if p.is_dir():
        raise CorewardingError(f"{setting}={str(p)!r} is a folder; expected a file name")
    require_output_dir(p.parent if str(p.parent) else Path("."), f"the folder of {setting}")
    if p.exists() and not os.access(p, os.W_OK):
        raise CorewardingError(f"{setting}={str(p)!r}: the file exists and cannot be written")
    return p


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file (after resolving links; False when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
