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
from pathlib import Path
from typing import Any

from corewarding.arguments import POSITIVE_FLOAT
from corewarding.errors import ConfigError, DataError
from corewarding.files import (
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
    require_output_file,
    same_file,
)


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
    parser.add_argument(
        "--timeout", type=POSITIVE_FLOAT, default=2.0, help="seconds per comparison (default 2)"
    )
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
    output = args.output or graded_path(path)
    summary_path = output.with_name(output.name.removesuffix(".jsonl") + ".summary.json")
    check_outputs(path, output, summary_path, "--output" if args.output else "the graded file")

    preds = [prediction_answer(row[args.pred_field], args.extract) for row in rows]
    golds = [gold_answer(row[args.gold_field], args.gold_as_is) for row in rows]
    with tqdm(total=len(rows), desc="grading", unit="answer", disable=None) as bar:
        verdicts = batch_equivalent(
            list(zip(preds, golds, strict=True)), timeout=args.timeout, progress=bar.update
        )

    atomic_write_jsonl(
        output,
        (
            {**row, "pred_answer": pred, "gold_answer": gold, "correct": verdict}
            for row, pred, gold, verdict in zip(rows, preds, golds, verdicts, strict=True)
        ),
    )
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
    atomic_write_json(summary_path, summary)
    print(f"accuracy {summary['accuracy']:.4f} ({correct}/{len(rows)}) -> {output}")
    return 0


def check_outputs(source: Path, output: Path, summary_path: Path, setting: str) -> None:
    """Refuse, before grading, outputs that cannot be written or that would replace the input file.

    Grading a large file takes minutes (each comparison may run to ``--timeout``), so a folder in the way
    or an unwritable location must fail first; and ``--output FILE.jsonl`` pointing at the input would
    silently overwrite the predictions with their grades.
    """
    for target, name in ((output, setting), (summary_path, "the summary file")):
        if same_file(target, source):
            raise ConfigError(f"{name} {str(target)!r} is the input file; choose another --output")
        require_output_file(target, name)


def read_rows(path: Path, pred_field: str, gold_field: str) -> list[dict[str, Any]]:
    """The JSONL rows, each checked to hold both fields; a ``DataError`` names the file, line and field.

    The file is read under :func:`corewarding.files.read_jsonl`'s rule: a torn last line (a writer cut
    short) is dropped with a warning; bad JSON or non-UTF-8 bytes anywhere else is an error.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a JSONL file of predictions")
    contents = read_jsonl(path, "one prediction record per line")
    for row, number in zip(contents.rows, contents.line_numbers, strict=True):
        where = f"{path}: line {number}"
        for name in (pred_field, gold_field):
            if name not in row:
                raise DataError(f"{where}: missing field {name!r} (fields: {', '.join(row)})")
        pred, gold = row[pred_field], row[gold_field]
        if pred is not None and not isinstance(pred, str | int | float):
            raise DataError(
                f"{where}: field {pred_field!r} is a {type(pred).__name__}; expected a string or a number"
            )
        if gold is None or isinstance(gold, bool) or not isinstance(gold, str | int | float):
            raise DataError(f"{where}: field {gold_field!r} is {gold!r:.60}; expected a string or a number")
    return contents.rows


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
