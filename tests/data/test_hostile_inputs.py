"""Hostile data files: every command that reads data stays linear and fails with one clear DataError.

Found by a sweep with adversarial inputs: an answer holding 20,000 ``\\boxed{`` (which once took minutes to
load), bytes that are not UTF-8, lone UTF-16 surrogates, torn or damaged JSON lines, absurd nesting, and
parquet strings that are not UTF-8.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corewarding.answers import extract_answer, reference_answer
from corewarding.data import load_pairs, load_questions, save_questions_parquet
from corewarding.data.question import Question
from corewarding.errors import DataError
from corewarding.evaluation.benchmarks import resolve_benchmarks

N = 20_000
BOUND_S = 2.5  # the old parser took 19 s for 5,000 boxes; a linear pass over 20,000 takes well under 0.2 s

HOSTILE = {
    "nested closed": ("so " + "\\boxed{" * N + "42" + "}" * N, "42"),
    "nested unclosed after a box": ("\\boxed{42} " + "\\boxed{" * N, "42"),
    "unclosed with text": ("\\boxed{42} " + "\\boxed{ x " * N, "42"),
    "siblings": ("\\boxed{1} " * N + "\\boxed{42}", "42"),
    "space forms before a box": ("\\boxed " * N + "\\boxed{42}", "42"),
    "nested unclosed, no box at all": ("\\boxed{" * N + "42", None),
    "nested fboxes": ("\\fbox{" * N + "42" + "}" * N, "42"),
    "escaped braces": ("\\boxed{42}" + "\\boxed{\\{" * N, "42"),
}


def _timed(timing, text: str, label: str, fn):
    """``fn()`` within BOUND_S, or (on a busy machine, the best of three tries) within 100 plain Python
    passes over ``text`` measured now: a quadratic pass over these 140 kB costs far more than either."""
    try:
        return timing.within(fn, BOUND_S, text)
    except AssertionError as err:
        raise AssertionError(f"{label}: {err}") from None


def _verl_row(index: int, text: str) -> dict:
    return {
        "prompt": [
            {"role": "system", "content": "Let's think step by step."},
            {"role": "user", "content": "What is 6 times 7? " + text[:1000]},
        ],
        "reward_model": {"ground_truth": text, "style": "rule"},
        "data_source": "hostile",
        "ability": "math",
        "extra_info": {"index": index, "split": "train"},
        "solution": text,
    }


@pytest.mark.parametrize("name", list(HOSTILE))
def test_twenty_thousand_boxes_load_in_linear_time_everywhere(tmp_path: Path, name: str, timing) -> None:
    text, gold = HOSTILE[name]
    # flat layout (MATH-500's): the gold is the answer's last box, found by auto-detection and when forced
    flat = [
        {"question": "What is 6 times 7?", "answer": text},
        {"question": "And 2+2?", "answer": "\\boxed{4}"},
    ]
    flat_jsonl = tmp_path / "flat.jsonl"
    flat_jsonl.write_text("".join(json.dumps(r) + "\n" for r in flat), encoding="utf-8")
    flat_parquet = tmp_path / "flat.parquet"
    pq.write_table(pa.Table.from_pylist(flat), flat_parquet)
    # benchmark layout (AIME's): a plain answer plus a full solution, read with gold_field="solution"
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        "".join(
            json.dumps({"problem": "q?", "answer": "42", "solution": text, "id": i}) + "\n" for i in range(2)
        )
    )
    # verl layout: the hostile text as ground truth and as a solution column
    verl = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist([_verl_row(0, text), _verl_row(1, text)]), verl)
    rephrased = tmp_path / "verl_rephrased.parquet"
    pq.write_table(pa.Table.from_pylist([_verl_row(0, text), _verl_row(1, text)]), rephrased)

    boxed_gold = gold
    for label, source, kwargs in [
        ("flat jsonl, auto", flat_jsonl, {}),
        ("flat jsonl, boxed", flat_jsonl, {"answer_format": "boxed"}),
        ("flat parquet", flat_parquet, {}),
    ]:
        if boxed_gold is None:  # no complete braced box: the boxed format must refuse the row, quickly
            refuse = timing.caught(lambda s=source: load_questions(s, answer_format="boxed"))
            err = _timed(timing, text, label, refuse)
            assert isinstance(err, DataError) and "boxed" in str(err), label
            continue
        questions = _timed(timing, text, label, lambda s=source, k=kwargs: load_questions(s, **k))
        assert questions[0].gold == boxed_gold, label
        assert questions[0].extra["solution"] == text
    plain = _timed(timing, text, "benchmark jsonl", lambda: load_questions(bench))
    assert [q.gold for q in plain] == ["42", "42"]
    if boxed_gold is not None:
        from_solution = _timed(
            timing, text, "gold_field=solution", lambda: load_questions(bench, gold_field="solution")
        )
        assert from_solution[0].gold == boxed_gold
        verl_solution = _timed(
            timing, text, "verl gold_field", lambda: load_questions(verl, gold_field="solution")
        )
        assert verl_solution[1].gold == boxed_gold
    verl_questions = _timed(timing, text, "verl parquet", lambda: load_questions(verl))
    assert verl_questions[0].gold == text  # a ground truth is kept verbatim, never parsed
    pairs = _timed(timing, text, "load_pairs", lambda: load_pairs(verl, rephrased))
    assert len(pairs) == 2
    (benchmark,) = resolve_benchmarks(str(bench), 1)  # what `corewarding eval` loads a custom file through
    assert len(_timed(timing, text, "benchmark", lambda: load_questions(benchmark.path))) == 2

    # answer extraction, as rewards, `grade` (reference_answer) and eval scoring run it on such text
    lenient = _timed(timing, text, "extract lenient", lambda: extract_answer(text))
    if gold is not None:
        assert lenient == gold
    _timed(timing, text, "extract boxed", lambda: extract_answer(text, "boxed"))
    _timed(timing, text, "reference_answer", lambda: reference_answer(text))
    _timed(timing, text, "extract from a solution", lambda: extract_answer("The answer is " + text))


def test_loading_time_grows_linearly(tmp_path: Path, timing) -> None:
    """16x the boxes costs about 16x the time (quadratic would be 256x)."""

    def path(n: int) -> Path:
        written = tmp_path / f"n{n}.jsonl"
        written.write_text(json.dumps({"question": "q?", "answer": "\\boxed{1} " + "\\boxed{" * n}) + "\n")
        return written

    small_path, large_path = path(2_500), path(40_000)
    assert load_questions(large_path, answer_format="boxed")[0].gold == "1"
    small, large = timing.growth(
        lambda: load_questions(small_path, answer_format="boxed"),
        lambda: load_questions(large_path, answer_format="boxed"),
    )
    assert large < max(small, 0.002) * 16 * 4, (small, large)


# ----------------------------------------------------------------------------------------- undecodable bytes
def _raises(path: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_questions(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def test_non_utf8_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "2"}) + "\n"
    path.write_bytes((good * 2).encode() + '{"question": "caf\u00e9?", "answer": "3"}\n'.encode("latin-1"))
    _raises(path, "line 3", "not UTF-8", "question")


def test_non_utf8_json_list_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(b'[\n{"question": "a?", "answer": "1"},\n{"question": "caf\xe9?", "answer": "2"}\n]\n')
    _raises(path, "line 3", "b'\\xe9'", "not UTF-8", "expected UTF-8 JSON")


def test_json_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"question": "a?", "answer": 1}]).encode())
    assert [q.gold for q in load_questions(path)] == ["1"]


def test_single_json_object_is_one_row_even_pretty_printed(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"question": "a?", "answer": "7"}, indent=2))
    assert [q.gold for q in load_questions(path)] == ["7"]


def test_parquet_string_that_is_not_utf8_names_row_and_column(tmp_path: Path) -> None:
    values = pa.array([b"What is 1+1?", b"What is caf\xe9?"], type=pa.binary())
    questions = pa.Array.from_buffers(pa.string(), len(values), values.buffers())  # unchecked bytes
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": questions, "answer": ["2", "3"]}), path)
    _raises(path, "row 1", "field 'question'", "not UTF-8")


@pytest.mark.parametrize("escape", ["\\ud83d", "\\udc00"])
def test_lone_surrogate_escape_is_refused_at_load(tmp_path: Path, escape: str) -> None:
    """A half emoji (``"\\ud83d"``) is valid JSON but not text: it would crash a later write, not the load."""
    path = tmp_path / "half.jsonl"
    path.write_text(
        '{"question": "1+1?", "answer": "2"}\n'
        '{"question": "ok?", "answer": "3", "meta": {"tags": ["fine", "bad ' + escape + '"]}}\n'
    )
    _raises(path, "line 2", "field 'meta.tags[1]'", "surrogate")
    listing = tmp_path / "half.json"
    listing.write_text('[{"question": "a ' + escape + '?", "answer": "1"}]')
    _raises(listing, "item 0", "field 'question'", "surrogate")


def test_saving_a_question_with_a_lone_surrogate_is_a_data_error(tmp_path: Path) -> None:
    bad = Question.from_text(id="a", question="x?", gold="1", extra={"note": "half \ud83d"})
    with pytest.raises(DataError, match="field 'note'"):
        save_questions_parquet([bad], tmp_path / "q.parquet")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_absurdly_nested_json_is_a_data_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    deep = '{"question": "a?", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text(deep + "\n")
    _raises(path, "nested too deeply")


# ----------------------------------------------------------------------------------------- the JSONL rule
def test_torn_last_line_is_dropped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "torn.jsonl"
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"question": "3+3?", "ans')
    with caplog.at_level(logging.WARNING):
        questions = load_questions(path)
    assert [q.gold for q in questions] == ["2", "4"]
    assert any("torn last line" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_unterminated_whole_last_line_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "hand.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}')
    assert [q.gold for q in load_questions(path)] == ["2", "4"]


def test_damage_before_the_last_line_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jsonl"
    path.write_text(
        '{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "ans\n{"question": "x", "answer": "1"}\n'
    )
    _raises(path, "line 2", "not valid JSON", "damaged elsewhere")


def test_unicode_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    """``json.dumps(ensure_ascii=False)`` writes U+2028 raw; only ``\\n`` ends a JSONL line."""
    path = tmp_path / "sep.jsonl"
    row = {"question": "first\u2028second?", "answer": "1"}
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_questions(path)[0].question == "first\u2028second?"
