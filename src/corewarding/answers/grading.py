"""Grade the predictions in a JSONL file against their golds: `corewarding grade FILE.jsonl`.

Each line is a JSON object; ``--pred-field`` holds the prediction and ``--gold-field`` the gold.

* The prediction is taken as written, or, with ``--extract``, as a full solution whose final answer is
  extracted (last box, ``####``, "The answer is"), falling back to the whole text when it states none.
* The gold is reduced to its answer when it is written like a solution (a box, ``####``, "The answer
  is" — as in MATH500's and GSM8K's ``answer`` fields) and used as written otherwise (a bare "42").
  ``--gold-as-is`` turns that off.

Writes ``FILE.graded.jsonl`` (each input row plus ``pred_answer``, ``gold_answer``, ``correct``) and
``FILE.graded.summary.json`` next to the input, and prints the accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from corewarding.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL file with one prediction per line")
    parser.add_argument("--pred-field", required=True, help="field holding the prediction")
    parser.add_argument("--gold-field", required=True, help="field holding the gold answer or solution")
    parser.add_argument(
        "--extract",
        action="store_true",
        help="the prediction is a full solution: grade its extracted final answer",
    )
    parser.add_argument(
        "--gold-as-is",
        action="store_true",
        help="use the gold field as written, even when it looks like a solution",
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per comparison (default 2)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="per-row results (default: FILE.graded.jsonl next to the input)",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from corewarding.answers.equivalence import batch_equivalent

    path: Path = args.file
    rows = read_rows(path, args.pred_field, args.gold_field)
    preds = [prediction_answer(row[args.pred_field], args.extract) for row in rows]
    golds = [gold_answer(row[args.gold_field], args.gold_as_is) for row in rows]

    with tqdm(total=len(rows), desc="grading", unit="answer", disable=None) as bar:
        verdicts = batch_equivalent(
            list(zip(preds, golds, strict=True)), timeout=args.timeout, progress=bar.update
        )

    output = args.output or graded_path(path)
    graded = [
        {**row, "pred_answer": pred, "gold_answer": gold, "correct": verdict}
        for row, pred, gold, verdict in zip(rows, preds, golds, verdicts, strict=True)
    ]
    write_atomic(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in graded))
    correct = sum(verdicts)
    summary = {
        "file": str(path),
        "output": str(output),
        "pred_field": args.pred_field,
        "gold_field": args.gold_field,
        "extract": bool(args.extract),
        "gold_as_is": bool(args.gold_as_is),
        "rows": len(rows),
        "correct": correct,
        "accuracy": correct / len(rows) if rows else 0.0,
        "no_prediction": sum(p is None for p in preds),
    }
    summary_path = output.with_name(output.name.removesuffix(".jsonl") + ".summary.json")
    write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    print(f"accuracy {summary['accuracy']:.4f} ({correct}/{len(rows)}) -> {output}")
    return 0


def read_rows(path: Path, pred_field: str, gold_field: str) -> list[dict[str, Any]]:
    """The JSONL rows, each checked to hold both fields; a ``DataError`` names the file, line and field."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            for name in (pred_field, gold_field):
                if name not in row:
                    raise DataError(f"{path}:{number}: missing field {name!r} (fields: {', '.join(row)})")
            pred, gold = row[pred_field], row[gold_field]
            if pred is not None and not isinstance(pred, str | int | float):
                raise DataError(
                    f"{path}:{number}: field {pred_field!r} is a {type(pred).__name__}; "
                    "expected a string or a number"
                )
            if gold is None or isinstance(gold, bool) or not isinstance(gold, str | int | float):
                raise DataError(
                    f"{path}:{number}: field {gold_field!r} is {gold!r:.60}; expected a string or a number"
                )
            rows.append(row)
    return rows


def prediction_answer(value: str | float | None, extract: bool) -> str | None:
    """The answer graded for a prediction value (``None`` when there is none)."""
    if value is None:
        return None
    from corewarding.answers.extraction import extract_answer

    text = str(value)
    if extract:
        found = extract_answer(text)
        return found if found is not None else (text.strip() or None)
    return text.strip() or None


def gold_answer(value: str | float, as_is: bool) -> str:
    """The gold answer for a gold value: see the module docstring for the rule."""
    from corewarding.answers.extraction import reference_answer

    text = str(value)
    return text.strip() if as_is else reference_answer(text)


def graded_path(path: Path) -> Path:
    """``FILE.jsonl`` -> ``FILE.graded.jsonl`` in the same folder."""
    stem = path.name.removesuffix(".jsonl")
    return path.with_name(f"{stem}.graded.jsonl")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
