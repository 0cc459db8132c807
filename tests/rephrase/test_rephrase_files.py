"""The files ``corewarding rephrase`` writes and reads itself: where they may go, and what a damaged one does.

Outputs are checked before any request: one that is the input (under any spelling), a folder, or in a
folder that cannot be written is one line and exit 2, with the input untouched. The state file follows the
one JSONL rule of ``corewarding.files``: a torn last line from a crash is dropped and reported, damage
anywhere else (including bytes that are not UTF-8) is an error naming the file and the line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from corewarding.arguments import Number
from corewarding.cli import build_parser, main
from corewarding.errors import DataError
from corewarding.files import JsonlAppender, read_jsonl
from corewarding.rephrase.cli import sidecar
from corewarding.rephrase.pipeline import GroupCommit, load_state
from corewarding.rephrase.prompt import load_instruction


def _args(inp: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "rephrase", str(inp), "--limit", "6", "--out", str(out), "--api-base", url, "--model", "scripted",
        "--max-retries", "1", "--backoff", "0.01", "--concurrency", "2", "--no-progress", *extra,
    ]  # fmt: skip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("corewarding rephrase: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def own_input(math20_path, tmp_path) -> Path:
    """A private copy of the input, so that a failed refusal could only ever destroy the copy."""
    path = tmp_path / "data" / "questions.parquet"
    path.parent.mkdir()
    shutil.copyfile(math20_path, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ output paths


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "log", "state"])
def test_an_output_that_is_the_input_is_refused_before_any_work(
    scripted_server, own_input, tmp_path, capsys, spelling
):
    before = _digest(own_input)
    other = tmp_path / "out" / "r.parquet"
    if spelling == "symlink":
        link = tmp_path / "link.parquet"
        link.symlink_to(own_input)
        setting, args = "--out", _args(own_input, link, scripted_server.url)
    elif spelling == "dotted":
        (tmp_path / "data" / "sub").mkdir()
        dotted = tmp_path / "data" / "sub" / ".." / "." / "questions.parquet"
        setting, args = "--out", _args(own_input, dotted, scripted_server.url)
    elif spelling in ("log", "state"):
        setting = f"--{spelling}"
        args = _args(own_input, other, scripted_server.url, setting, str(own_input))
    else:
        setting, args = "--out", _args(own_input, own_input, scripted_server.url)
    assert main(args) == 2
    line = _error_line(capsys)
    assert f"error: {setting} '" in line and f"is the input file '{own_input}'" in line, line
    assert "refusing to overwrite the input" in line
    assert _digest(own_input) == before and scripted_server.requests == []
    assert sorted(p.name for p in own_input.parent.iterdir()) == ["questions.parquet"] + (
        ["sub"] if spelling == "dotted" else []
    )  # no state, log or summary beside it either
    assert not (tmp_path / "out").exists()


def test_two_outputs_that_are_one_file_are_refused(scripted_server, own_input, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert main(_args(own_input, out, scripted_server.url, "--state", str(out))) == 2
    assert "--out and --state are the same file" in _error_line(capsys)
    assert not out.exists() and scripted_server.requests == []


def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    scripted_server, own_input, tmp_path, capsys
):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(_args(own_input, folder, scripted_server.url)) == 2
    assert f"--out='{folder}' is a folder; expected a file name" in _error_line(capsys)

    regular = tmp_path / "notes.txt"
    regular.write_text("not a folder")
    assert main(_args(own_input, regular / "r.parquet", scripted_server.url)) == 2
    assert f"the folder of --out='{regular}' is a regular file; expected a folder" in _error_line(capsys)
    assert main(_args(own_input, regular / "deeper" / "r.parquet", scripted_server.url)) == 2
    line = _error_line(capsys)
    assert f"the folder of --out='{regular / 'deeper'}': a part of the path is a regular file" in line

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "r.parquet"
    if os.access(locked, os.W_OK):  # root writes anywhere; /sys refuses even root
        target = Path("/sys/corewarding-rephrase-test/r.parquet")
        if not Path("/sys").is_dir():
            pytest.skip("no folder this user cannot write")
    try:
        assert main(_args(own_input, target, scripted_server.url)) == 2
        assert f"the folder of --out='{target.parent}': cannot write there" in _error_line(capsys)
    finally:
        locked.chmod(0o700)
    assert scripted_server.requests == []


# ------------------------------------------------------------------------------------------ options


def _rephrase_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["rephrase"]


def test_every_numeric_option_carries_its_domain(capsys):
    numeric = {a.option_strings[0]: a for a in _rephrase_parser()._actions if a.type is not None}
    assert all(isinstance(a.type, Number) for a in numeric.values()), {
        name: a.type for name, a in numeric.items() if not isinstance(a.type, Number)
    }
    assert set(numeric) >= {
        "--limit", "--concurrency", "--batch-size", "--request-timeout", "--connect-timeout", "--http-retries",
        "--backoff", "--give-up-after", "--temperature", "--top-p", "--max-tokens", "--seed", "--max-retries",
        "--check-k", "--check-temperature", "--check-max-tokens",
    }  # fmt: skip
    for name, action in numeric.items():
        for bad in action.type.bad_values:
            with pytest.raises(SystemExit) as exc:
                main(["rephrase", "in.parquet", "--out", "o.parquet", "--model", "m", f"{name}={bad}"])
            assert exc.value.code == 2, (name, bad)
            err = capsys.readouterr().err.strip().splitlines()
            assert err[-1].startswith(f"corewarding rephrase: error: argument {name}: "), (name, bad, err)
            assert "Traceback" not in "\n".join(err)


# ----------------------------------------------------------------------------------- the state file


HEADER = {"type": "header", "version": 1, "rows": 3}


def _row(row: int, status: str = "ok") -> dict:
    return {
        "type": "row", "row": row, "status": status, "rewrite": f"rewrite {row}" if status == "ok" else None,
        "attempts": 1, "attempt_statuses": [status if status == "ok" else "empty"], "http_retries": 0,
        "reason": "", "prompt_tokens": 3, "completion_tokens": 4,
    }  # fmt: skip


def _lines(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_a_torn_last_line_is_dropped_reported_and_appended_after(tmp_path, caplog):
    path = tmp_path / "state.jsonl"
    # a crash cut the last write in the middle of a two-byte character: not UTF-8, not JSON, not an error
    path.write_bytes(
        _lines(HEADER, _row(0), _row(1)) + '{"type": "row", "row": 2, "rewrite": "é'.encode()[:-1]
    )
    with caplog.at_level(logging.WARNING):
        state = load_state(path, HEADER, 3, restart=False)
    assert sorted(state.rows) == [0, 1] and state.done == {0, 1} and state.torn_line
    assert "dropped a torn last line" in caplog.text
    with JsonlAppender(path, durable=True) as out:  # the fragment is cut before the next record
        out.write([_row(2)])
    assert [json.loads(line)["type"] for line in path.read_bytes().splitlines()] == [
        "header",
        "row",
        "row",
        "row",
    ]
    assert not read_jsonl(path).torn


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (b"not json\n", r"state\.jsonl: line 3: not valid JSON"),
        (
            b'{"type": "row", "row": 1, "reason": "\xff\xfe"}\n',
            r"state\.jsonl: line 3: bytes that are not UTF-8",
        ),
        (b"[1, 2]\n", r"state\.jsonl: line 3: expected a JSON object"),
        (json.dumps({**_row(1), "attempts": "2"}).encode() + b"\n", r"line 3: row 1: field 'attempts'"),
        (json.dumps({**_row(1), "status": "great"}).encode() + b"\n", r"line 3: row 1: expected status 'ok'"),
        (json.dumps(_row(7)).encode() + b"\n", r"line 3: expected a row record with 'row' in \[0, 3\)"),
    ],
)
def test_damage_before_the_last_line_names_the_line(tmp_path, damage, expected):
    path = tmp_path / "state.jsonl"
    path.write_bytes(_lines(HEADER, _row(0)) + damage + _lines(_row(2)))
    with pytest.raises(DataError, match=expected):
        load_state(path, HEADER, 3, restart=False)


def test_a_state_file_with_bytes_that_are_not_utf8_is_one_clear_error(
    scripted_server, own_input, tmp_path, capsys
):
    out = tmp_path / "r.parquet"
    state = sidecar(out, ".state.jsonl")
    state.write_bytes(b'{"type": "header"}\n{"row": 0, "text": "caf\xe9"}\n{"row": 1}\n')
    assert main(_args(own_input, out, scripted_server.url)) == 2
    line = _error_line(capsys)
    assert f"{state}: line 2: bytes that are not UTF-8" in line
    assert scripted_server.requests == []


def test_a_prompt_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_bytes(b"Rewrite:\n{question}\n### RESULT_START REWRITE: \xa0 ### RESULT_END\n")
    with pytest.raises(DataError, match=r"prompt\.txt: line 3: byte b'\\xa0' at offset \d+ is not UTF-8"):
        load_instruction(path)


def test_fallbacks_are_recorded_but_done_only_when_kept(tmp_path):
    path = tmp_path / "state.jsonl"
    failed_then_ok = {**_row(1), "attempts": 2, "attempt_statuses": ["empty", "ok"]}
    path.write_bytes(_lines(HEADER, _row(0), _row(1, "failed"), _row(2, "failed"), failed_then_ok))
    state = load_state(path, HEADER, 3, restart=False)
    assert state.rows[1] == failed_then_ok and state.rows[2]["status"] == "failed"
    assert state.done == {0, 1} and state.fallbacks_to_retry == [2]
    assert state.next_attempt == {0: 1, 1: 3, 2: 1}  # row 1's attempts continue after both records
    assert load_state(path, HEADER, 3, restart=False, keep_fallbacks=True).done == {0, 1, 2}


def test_group_commit_makes_every_row_durable_with_few_fsyncs(tmp_path, monkeypatch):
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    path = tmp_path / "state.jsonl"

    async def go() -> None:
        with JsonlAppender(path, durable=True) as writer:
            commit = GroupCommit(writer)
            try:
                await asyncio.gather(*(commit.write(_row(i % 3) | {"n": i}) for i in range(200)))
                # every write has returned, so every record is on disk already
                assert len(read_jsonl(path).rows) == 200
            finally:
                await commit.aclose()

    asyncio.run(go())
    assert [r["n"] for r in read_jsonl(path).rows] == list(range(200))
    assert 1 <= len(fsyncs) < 50  # batched: far fewer fsyncs than rows
