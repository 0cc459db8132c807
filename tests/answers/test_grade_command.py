"""`corewarding grade`: acceptance figures on the real MATH500 / GSM8K references, outputs, clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from corewarding.answers import grading
from corewarding.cli import main
from corewarding.errors import DataError


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _grade(path: Path, pred: str, gold: str, *extra: str) -> dict:
    assert main(["grade", str(path), "--pred-field", pred, "--gold-field", gold, *extra]) == 0
    summary_path = path.with_name(path.name.removesuffix(".jsonl") + ".graded.summary.json")
    return json.loads(summary_path.read_text())


@pytest.fixture(scope="module")
def math500(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MATH500 rows plus two independently derived golds: the "The answer is:" tail, and the tail of the
    next row (a shuffled pairing that must score near zero)."""
    rows = _load(shared_data / "benchmarks" / "math500.jsonl")
    tails = [row["answer"].rsplit("The answer is:", 1)[1].strip() for row in rows]
    for i, row in enumerate(rows):
        row["tail"] = tails[i]
        row["shuffled"] = tails[(i + 1) % len(rows)]
    return _write(tmp_path_factory.mktemp("math500") / "math500.jsonl", rows)


def test_math500_reference_solutions_grade_correct(math500: Path, capsys: pytest.CaptureFixture) -> None:
    summary = _grade(math500, "answer", "tail", "--extract")
    print(f"MATH500 reference (last box) vs 'The answer is' tail: {summary['correct']}/{summary['rows']}")
    assert summary["rows"] == 500
    assert summary["correct"] >= 499
    assert "accuracy" in capsys.readouterr().out

    graded = _load(math500.with_name("math500.graded.jsonl"))
    assert len(graded) == 500
    assert all({"pred_answer", "gold_answer", "correct", "question"} <= row.keys() for row in graded)
    assert not list(math500.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_math500_gold_rule_extracts_the_last_box(math500: Path) -> None:
    """Gold field = the full reference solution: the gold rule must reduce it to its last box."""
    summary = _grade(math500, "tail", "answer")
    assert summary["correct"] >= 499


def test_math500_shuffled_pairing_scores_near_zero(math500: Path) -> None:
    summary = _grade(math500, "answer", "shuffled", "--extract")
    print(f"MATH500 shuffled pairing: {summary['correct']}/{summary['rows']}")
    assert summary["accuracy"] < 0.05


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = _load(shared_data / "benchmarks" / "gsm8k_test.jsonl")
    golds = [row["answer"].rsplit("####", 1)[1].strip().replace(",", "") for row in rows]
    for i, row in enumerate(rows):
        row["gold"] = golds[i]
        row["shuffled"] = golds[(i + 7) % len(rows)]
    return _write(tmp_path_factory.mktemp("gsm8k") / "gsm8k.jsonl", rows)


def test_gsm8k_reference_solutions_grade_correct(gsm8k: Path) -> None:
    summary = _grade(gsm8k, "answer", "gold", "--extract")
    print(f"GSM8K reference vs #### gold (commas removed): {summary['correct']}/{summary['rows']}")
    assert (summary["correct"], summary["rows"]) == (1319, 1319)
    graded = _load(gsm8k.with_name("gsm8k.graded.jsonl"))
    with_commas = [row for row in graded if "," in row["pred_answer"]]
    assert with_commas and all(row["correct"] for row in with_commas)  # "1,000" graded equal to "1000"


def test_gsm8k_shuffled_pairing_scores_near_zero(gsm8k: Path) -> None:
    summary = _grade(gsm8k, "answer", "shuffled", "--extract")
    print(f"GSM8K shuffled pairing: {summary['correct']}/{summary['rows']}")
    assert summary["accuracy"] < 0.05


def test_without_extract_the_prediction_is_the_answer(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "preds.jsonl",
        [
            {"pred": "\\frac{1}{2}", "gold": "0.5"},
            {"pred": "The answer is 3", "gold": "3"},  # taken literally without --extract
            {"pred": None, "gold": "3"},
            {"pred": 142, "gold": "142.0"},
        ],
    )
    out = tmp_path / "out" / "graded.jsonl"
    assert (
        main(["grade", str(path), "--pred-field", "pred", "--gold-field", "gold", "--output", str(out)]) == 0
    )
    summary = json.loads((tmp_path / "out" / "graded.summary.json").read_text())
    assert summary["correct"] == 2
    assert summary["no_prediction"] == 1
    verdicts = [row["correct"] for row in _load(out)]
    assert verdicts == [True, False, False, True]


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_clear_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.jsonl"
    assert "no such file" in _error(["grade", str(missing), "--pred-field", "p", "--gold-field", "g"], capsys)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"p": "1", "g": "1"}\n{"p": "2", "g": \n')
    err = _error(["grade", str(bad), "--pred-field", "p", "--gold-field", "g"], capsys)
    assert f"{bad}: line 2:" in err and "not valid JSON" in err

    lacking = _write(tmp_path / "lacking.jsonl", [{"p": "1", "g": "1"}, {"p": "1", "g": "1"}, {"p": "2"}])
    err = _error(["grade", str(lacking), "--pred-field", "p", "--gold-field", "g"], capsys)
    assert f"{lacking}: line 3:" in err and "missing field 'g'" in err

    typed = _write(tmp_path / "typed.jsonl", [{"p": "1", "g": ["1"]}])
    err = _error(["grade", str(typed), "--pred-field", "p", "--gold-field", "g"], capsys)
    assert "'g'" in err and "expected a string or a number" in err


def test_read_rows_raises_data_error(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"list\.jsonl: line 1: expected a JSON object"):
        grading.read_rows(path, "p", "g")


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"p": "1", "g": "1"}\n{"p": "caf\xe9", "g": "1"}\n{"p": "2", "g": "2"}\n')
    err = _error(["grade", str(path), "--pred-field", "p", "--gold-field", "g"], capsys)
    assert f"{path}: line 2:" in err and "UTF-8" in err
    assert not path.with_name("latin1.graded.jsonl").exists()


def test_torn_last_line_is_dropped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_text('{"p": "1", "g": "1"}\n{"p": "2", "g": "2"}\n{"p": "3", "g"')
    with caplog.at_level(logging.WARNING):
        summary = _grade(path, "p", "g")
    assert (summary["rows"], summary["correct"]) == (2, 2)
    assert "torn last line" in caplog.text and "torn.jsonl" in caplog.text


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc"])
def test_timeout_must_be_a_positive_number(value: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path / "p.jsonl", [{"p": "1", "g": "1"}])
    with pytest.raises(SystemExit) as exc:
        main(["grade", str(path), "--pred-field", "p", "--gold-field", "g", "--timeout", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"corewarding grade: error: argument --timeout: {value!r}: expected a positive number"
    )


@pytest.fixture
def no_grading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grading must not start when an output cannot be written."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("grading started")

    monkeypatch.setattr("corewarding.answers.equivalence.batch_equivalent", refuse)


def test_outputs_in_the_way_fail_before_grading(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_grading: None
) -> None:
    path = _write(tmp_path / "p.jsonl", [{"p": "1", "g": "1"}])
    argv = ["grade", str(path), "--pred-field", "p", "--gold-field", "g"]

    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    err = _error([*argv, "--output", str(folder)], capsys)
    assert "--output" in err and "is a folder" in err

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    err = _error([*argv, "--output", str(blocker / "graded.jsonl")], capsys)
    assert "regular file" in err and str(blocker) in err

    (tmp_path / "p.graded.jsonl").mkdir()  # the default output is taken by a folder
    err = _error(argv, capsys)
    assert "the graded file" in err and "is a folder" in err

    (tmp_path / "g.summary.json").mkdir()
    err = _error([*argv, "--output", str(tmp_path / "g.jsonl")], capsys)
    assert "the summary file" in err and "is a folder" in err
    assert not (tmp_path / "g.jsonl").exists()


def test_output_that_is_the_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_grading: None
) -> None:
    path = _write(tmp_path / "p.jsonl", [{"p": "1", "g": "1"}])
    before = path.read_bytes()
    err = _error(
        ["grade", str(path), "--pred-field", "p", "--gold-field", "g", "--output", str(path)], capsys
    )
    assert "is the input file" in err
    assert path.read_bytes() == before
