"""The one file policy (corewarding.files): atomic writes, durable appends, and the torn-last-line rule."""

from __future__ import annotations

import json
import logging
import os

import pytest

from corewarding.errors import CorewardingError, DataError
from corewarding.files import (
    JsonlAppender,
    append_jsonl,
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    read_text,
    require_output_dir,
    require_output_file,
    rewrite_jsonl,
    same_file,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "result.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old: 1\n")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half of the new fi")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_atomic_output_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_output(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_torn_last_line_is_dropped_and_reported(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING, logger="corewarding.files"):
        contents = read_jsonl(path)
    assert contents.rows == [{"step": 1}, {"step": 2}]
    assert contents.torn and contents.torn_bytes == len(b'{"step": 3, "lo')
    assert contents.valid_bytes == len(b'{"step": 1}\n{"step": 2}\n')
    assert "torn last line" in caplog.text and str(path) in caplog.text


def test_whole_unterminated_last_line_is_kept(tmp_path):
    path = tmp_path / "hand.jsonl"
    path.write_text('{"q": 1}\n{"q": 2}')
    contents = read_jsonl(path)
    assert contents.rows == [{"q": 1}, {"q": 2}] and not contents.torn
    assert contents.line_numbers == [1, 2]


@pytest.mark.parametrize(
    "body, line, expected",
    [
        (b'{"a": 1}\n{"a": \n{"a": 3}\n', 2, "not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', 2, "expected a JSON object"),
        (b'{"a": 1}\n\n{"a": "\xff"}\n', 3, "not UTF-8"),
        (b'{"a": 1}\n{"a": 2, torn}\n', 2, "not valid JSON"),  # terminated: damage, not a torn tail
    ],
)
def test_damage_before_the_last_line_is_an_error_naming_the_line(tmp_path, body, line, expected):
    path = tmp_path / "log.jsonl"
    path.write_bytes(body)
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}: line {line}:" in str(err.value) and expected in str(err.value)


def test_missing_file_reads_as_empty_and_limit_stops_early(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl").rows == []
    path = tmp_path / "many.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\nnot json at all\n')
    assert read_jsonl(path, limit=2).rows == [{"i": 0}, {"i": 1}]


def test_appender_cuts_a_torn_tail_and_terminates_a_whole_one(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"row": 0}\n{"row": 1, "te')
    append_jsonl(path, [{"row": 1}])
    assert path.read_bytes() == b'{"row": 0}\n{"row": 1}\n'
    path.write_bytes(b'{"row": 0}')
    with JsonlAppender(path, durable=True) as out:
        out.write([{"row": 1}, {"row": 2}])
        out.write([])
    assert read_jsonl(path).rows == [{"row": 0}, {"row": 1}, {"row": 2}]
    assert path.read_bytes().endswith(b"\n")


def test_rewrite_jsonl_keeps_matching_records_atomically(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": s} for s in range(5)])
    with open(path, "ab") as f:
        f.write(b'{"step": 5')
    dropped = rewrite_jsonl(path, lambda r: r["step"] <= 2)
    assert dropped == 2
    assert path.read_bytes() == b'{"step": 0}\n{"step": 1}\n{"step": 2}\n'
    assert rewrite_jsonl(tmp_path / "absent.jsonl", lambda r: True) == 0
    assert not (tmp_path / "absent.jsonl").exists()


def test_read_text_names_the_line_of_undecodable_bytes(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_bytes(b"line one\nline two \xc3\x28 here\n")
    with pytest.raises(DataError, match=r"prompt\.txt: line 2: byte .* is not UTF-8"):
        read_text(path)
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_text(tmp_path)


def test_output_locations_are_checked_before_work(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the run folder should go")
    with pytest.raises(CorewardingError, match=r"trainer.output_dir=.*is a regular file"):
        require_output_dir(blocker, "trainer.output_dir")
    with pytest.raises(CorewardingError, match="a part of the path is a regular file"):
        require_output_dir(blocker / "run", "trainer.output_dir")
    made = require_output_dir(tmp_path / "new" / "run", "--out")
    assert made.is_dir() and list(made.iterdir()) == []  # the probe file is gone
    with pytest.raises(CorewardingError, match="is a folder; expected a file name"):
        require_output_file(tmp_path, "--out")
    with pytest.raises(CorewardingError, match="regular file"):
        require_output_file(blocker / "out.parquet", "--out")
    assert require_output_file(tmp_path / "a" / "out.parquet", "--out").parent.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(CorewardingError, match="cannot write there"):
        require_output_dir(locked / "run", "trainer.output_dir")


def test_same_file_sees_through_other_spellings_and_links(tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"x")
    link = tmp_path / "link.parquet"
    link.symlink_to(data)
    assert same_file(data, tmp_path / "." / "train.parquet")
    assert same_file(link, data)
    assert not same_file(data, tmp_path / "other.parquet")


def test_published_files_get_the_mode_a_plain_write_would(tmp_path):
    umask = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "summary.json", "{}\n")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        shared = tmp_path / "shared.json"
        shared.write_text("{}")
        shared.chmod(0o664)
        atomic_write_text(shared, "[]\n")
        assert shared.stat().st_mode & 0o777 == 0o664  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_absurdly_nested_json_is_a_data_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + '{"b": 1}\n')
    with pytest.raises(DataError, match="line 1: JSON nested too deeply"):
        read_jsonl(path)
