"""Read raw rows from any supported source, turning every I/O failure into one clear ``DataError``.

The loaders care about rows (dicts), not about where they came from, so this module is the only place
that knows file formats: verl-style parquet, JSON lines, a JSON list, a ``datasets`` folder saved with
``save_to_disk``, a local folder ``datasets.load_dataset`` understands, or a Hugging Face dataset name.
It never interprets the rows; ``corewarding.data.rows`` does.

Text files are read by ``corewarding.files`` (``read_jsonl``, ``read_text``) so that every command holds
data files to the same rule: bytes that are not UTF-8 are a ``DataError`` naming the file and the line, and
a torn last JSON line (the unterminated tail of an interrupted write) is dropped with a warning while damage
anywhere else is an error. Parquet strings are checked too: pyarrow stores whatever bytes it was given and
only fails when a row is converted, so that failure is turned into an error naming the row and the column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corewarding.data.paths import resolve_data_path
from corewarding.errors import DataError
from corewarding.files import read_jsonl, read_text

_FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


@dataclass
class RawRows:
    """Rows read from one source, with what the error messages and ids need to know about it."""

    rows: list[dict[str, Any]]
    origin: str  # how errors name the source: the file path or the dataset name (and split)
    name: str  # default source name: the prefix of question ids
    columns: list[str]  # the table's columns (for JSON lines: the first row's keys)
    locate: Callable[[int], str]  # row position -> "row 3" / "line 4", for error messages


def _row_locator(i: int) -> str:
    return f"row {i}"


def default_name(path: Path) -> str:
    """``<folder>/<stem>`` (e.g. ``math/train_original``): stable wherever the data folder lives, and it
    tells apart same-named files of different training sets."""
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def read_rows(source: str | os.PathLike, *, split: str | None = None, limit: int | None = None) -> RawRows:
    """Read up to ``limit`` rows from ``source`` (a path, ``shared:...`` path, or dataset name).

    ``split`` selects a split of a ``datasets`` dataset; a single file has no splits, so passing one
    with a file is an error rather than silently ignored.
    """
    path = resolve_data_path(source)
    if path.is_file():
        if split is not None:
            raise DataError(f"{path}: split={split!r} was given, but a single file has no splits")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return _read_parquet(path, limit)
        if suffix == ".jsonl":
            return _read_json_lines(path, limit)
        if suffix == ".json":
            return _read_json(path, limit)
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected .parquet, .jsonl or .json")
    if path.is_dir():
        return _read_dataset_dir(path, split, limit)
    text = str(source)
    looks_local = (
        text.startswith(("shared:", "/", ".", "~"))
        or text.lower().endswith(_FILE_SUFFIXES)
        or isinstance(source, Path)
    )
    if looks_local:
        raise DataError(f"{path}: no such file or folder")
    return _read_hub_dataset(text, split, limit)


def _check_nonempty(n_rows: int, origin: str) -> None:
    if n_rows == 0:
        raise DataError(f"{origin}: the file has no rows; expected at least one question")


def _read_parquet(path: Path, limit: int | None) -> RawRows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as parquet ({exc})") from exc
    _check_nonempty(table.num_rows, str(path))
    if limit is not None:
        table = table.slice(0, limit)
    return RawRows(
        _table_rows(table, str(path)), str(path), default_name(path), table.column_names, _row_locator
    )


def _table_rows(table: Any, origin: str) -> list[dict[str, Any]]:
    """``table.to_pylist()``, with a string column holding bytes that are not UTF-8 reported as a
    ``DataError`` naming the row and the column instead of a bare ``UnicodeDecodeError``."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        pass
    row, column = _first_undecodable(table)
    raise DataError(
        f"{origin}: row {row}: field '{column}': a string holds bytes that are not UTF-8; expected UTF-8 text"
    ) from None


def _first_undecodable(table: Any) -> tuple[int, str]:
    """Row and column of the first value that does not decode (only called once decoding has failed).

    Blocks of rows are converted first and only a failing block row by row, so a large table costs a few
    hundred conversions rather than one per row.
    """
    block = 1024
    for name in table.column_names:
        column = table.column(name)
        for start in range(0, len(column), block):
            try:
                column.slice(start, block).to_pylist()
                continue
            except UnicodeDecodeError:
                pass
            for row in range(start, min(start + block, len(column))):
                try:
                    column.slice(row, 1).to_pylist()
                except UnicodeDecodeError:
                    return row, name
    return 0, "?"  # pragma: no cover - to_pylist failed, so some value does not decode


def _read_json_lines(path: Path, limit: int | None) -> RawRows:
    """One JSON object per line, under ``corewarding.files.read_jsonl``'s rule (torn last line dropped)."""
    try:
        contents = read_jsonl(path, what="a question and its answer", limit=limit)
    except RecursionError:
        raise DataError(_too_deep(path)) from None
    rows, line_numbers = contents.rows, contents.line_numbers
    _check_nonempty(len(rows), str(path))
    _check_unicode(rows, path, lambda i: f"line {line_numbers[i]}")
    return RawRows(rows, str(path), default_name(path), list(rows[0]), lambda i: f"line {line_numbers[i]}")


def _read_json(path: Path, limit: int | None) -> RawRows:
    """A ``.json`` file holding a list of objects, one object, or (as ``datasets`` also accepts) JSON lines.

    A leading byte-order mark (some editors write one) is skipped rather than reported as bad JSON.
    """
    text = read_text(path, "JSON").removeprefix("\ufeff")
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(_too_deep(path)) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: JSON lines under a .json name
            return _read_json_lines(path, limit)
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); expected a list "
            "of question objects or one object per line"
        ) from exc
    if isinstance(data, dict):  # a single object is a one-row file
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of question objects, got {type(data).__name__}")
    _check_nonempty(len(data), str(path))
    rows = data if limit is None else data[:limit]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i}: expected a JSON object, got {type(row).__name__}")
    _check_unicode(rows, path, lambda i: f"item {i}")
    return RawRows(rows, str(path), default_name(path), list(rows[0]), lambda i: f"item {i}")


def _too_deep(path: Path) -> str:
    return (
        f"{path}: JSON nested too deeply to read (thousands of levels of [ or {{); expected question objects "
        "with a few levels of nesting"
    )


def _check_unicode(rows: list[dict[str, Any]], path: Path, locate: Callable[[int], str]) -> None:
    """Refuse a string holding a lone UTF-16 surrogate (JSON's ``"\\ud83d"`` without its partner).

    ``json`` accepts such an escape, but the text cannot be encoded: the question would load and then
    crash a later step (tokenizing, writing a log line, saving parquet) far from the file at fault.
    """
    for i, row in enumerate(rows):
        field = _surrogate_field(row)
        if field is not None:
            raise DataError(
                f"{path}: {locate(i)}: field '{field}': a \\u escape encodes half of a UTF-16 surrogate "
                "pair, which is not a character; expected valid Unicode text"
            )


def _surrogate_field(row: dict[str, Any]) -> str | None:
    """The path (``prompt[1].content``) of the first string in ``row`` that cannot be encoded as UTF-8.

    Walks with an explicit stack: a row may nest as deeply as ``json`` allows, which is deeper than Python
    recursion could safely follow from here.
    """
    stack: list[tuple[Any, str]] = [(row, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return where or "?"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack.append((item, f"{where}.{key}" if where else str(key)))
                stack.append((key, where or "?"))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{k}]") for k, item in reversed(list(enumerate(value))))
    return None


def _select_split(obj: Any, split: str | None, origin: str) -> tuple[Any, str]:
    """Pick one split of a ``DatasetDict``; a plain ``Dataset`` is already one split."""
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        splits = list(obj)
        if split is None:
            if len(splits) != 1:
                raise DataError(f"{origin}: the dataset has splits {splits}; pass split= to choose one")
            split = splits[0]
        if split not in obj:
            raise DataError(f"{origin}: no split {split!r}; expected one of {splits}")
        return obj[split], f"{origin}:{split}"
    if not isinstance(obj, datasets.Dataset):
        raise DataError(f"{origin}: expected a datasets.Dataset or DatasetDict, got {type(obj).__name__}")
    return obj, origin


def _dataset_rows(ds: Any, origin: str, name: str, limit: int | None) -> RawRows:
    _check_nonempty(len(ds), origin)
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    try:
        rows = ds.to_list()
    except UnicodeDecodeError:
        rows = _table_rows(ds.with_format("arrow")[:], origin)  # raises, naming the row and the column
    return RawRows(rows, origin, name, list(ds.column_names), _row_locator)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message: enough to act on, and keeps the error one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` was written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _read_dataset_dir(path: Path, split: str | None, limit: int | None) -> RawRows:
    import datasets

    origin = str(path)
    try:
        if _is_saved_dataset(path):
            obj = datasets.load_from_disk(str(path))
            if isinstance(obj, datasets.Dataset) and split is not None:
                raise DataError(f"{origin}: split={split!r} was given, but this saved dataset has no splits")
        else:
            obj = datasets.load_dataset(str(path), split=split)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line naming the folder
        raise DataError(
            f"{origin}: cannot load as a Hugging Face dataset ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    ds, origin = _select_split(obj, split, origin)
    name = path.name if split is None else f"{path.name}:{split}"
    return _dataset_rows(ds, origin, name, limit)


def _read_hub_dataset(name: str, split: str | None, limit: int | None) -> RawRows:
    import datasets

    try:
        obj = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown name, bad config: all reach the user as one line
        raise DataError(
            f"{name}: not a local file or folder, and loading it as a Hugging Face dataset failed "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    ds, origin = _select_split(obj, split, name)
    return _dataset_rows(ds, origin, name if split is None else f"{name}:{split}", limit)
