"""``corewarding rephrase`` when the server is wrong: refusals, ``content: null``, silence, no server at all.

Each case once ended in exit 0 and a parquet of original questions (or ran for an hour): here each must
stop with one clear line, mark nothing done that was not really done, and let a rerun after the fix
finish the job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corewarding.cli import main
from corewarding.rephrase.backends import (
    CONNECT_TIMEOUT_S,
    GIVE_UP_AFTER_S,
    REQUEST_TIMEOUT_S,
    OpenAIChatBackend,
    give_up_bound,
)
from corewarding.rephrase.cli import sidecar

# rows that can never be rewritten in the fallback test; every other row answers well
HOPELESS = {2: "malformed", 3: "empty", 6: "verbatim", 8: "lost_number"}


def _args(inp: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "rephrase", str(inp), "--limit", "20", "--out", str(out), "--api-base", url, "--model", "scripted",
        "--max-retries", "2", "--request-timeout", "2", "--http-retries", "2", "--backoff", "0.01",
        "--concurrency", "4", "--no-progress", "--api-key-env", "REPHRASE_TEST_KEY", *extra,
    ]  # fmt: skip


def _state_rows(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "row"]


def _error_line(capsys) -> str:
    """The one line the CLI printed on stderr for an error (and check it is one line)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("corewarding rephrase: error:")]
    assert len(errors) == 1, err
    return errors[0]


# --------------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("http404", ["HTTP 404: ", "The model `wrong` does not exist.", "check --model ('scripted')"]),
        ("http401", ["HTTP 401: ", "Unauthorized", "no API key was sent ($REPHRASE_TEST_KEY is not set)"]),
        ("http400", ["HTTP 400: ", "prompt too long", "check --model, --max-tokens and --extra-body"]),
        ("http422", ["HTTP 422: ", "temperature: value is not a valid float"]),
    ],
)
def test_a_refused_request_stops_the_run_and_marks_nothing_done(
    scripted_server, math20_path, tmp_path, capsys, monkeypatch, behaviour, expected
):
    monkeypatch.delenv("REPHRASE_TEST_KEY", raising=False)
    scripted_server.default = [behaviour]
    out = tmp_path / "r.parquet"
    args = _args(math20_path, out, scripted_server.url)
    assert main(args) == 2
    line = _error_line(capsys)
    assert line.startswith(
        f"corewarding rephrase: error: {scripted_server.url}/chat/completions rejected the request: "
    )
    assert all(part in line for part in expected), line
    assert line.endswith("; nothing was marked done")
    # not retried (each question asked once), not recorded, no output
    assert 1 <= len(scripted_server.requests) <= 4 and set(scripted_server.calls.values()) == {1}
    assert _state_rows(sidecar(out, ".state.jsonl")) == [] and not out.exists()

    scripted_server.default = ["good"]  # the server is fixed: the same command does every row
    assert main(args) == 0
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["successes"] == 20 and summary["resumed_rows"] == 0 and summary["rows_this_run"] == 20


def test_a_refusal_mid_run_keeps_the_rows_done_before_it(
    scripted_server, math20, math20_path, tmp_path, capsys
):
    for q in math20[3:]:
        scripted_server.script[q.question] = ["http404"]
    out = tmp_path / "r.parquet"
    assert main(_args(math20_path, out, scripted_server.url, "--concurrency", "1")) == 2
    line = _error_line(capsys)
    assert "rejected the request: HTTP 404" in line
    assert line.endswith("; 3 row(s) finished before it are saved; the same command resumes after them")
    assert [r["row"] for r in _state_rows(sidecar(out, ".state.jsonl"))] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ fallbacks


def test_content_null_everywhere_is_an_error_and_a_rerun_retries_every_row(
    scripted_server, math20, math20_path, tmp_path, capsys
):
    scripted_server.default = ["null"]
    out = tmp_path / "r.parquet"
    args = _args(math20_path, out, scripted_server.url)
    assert main(args) == 2
    line = _error_line(capsys)
    assert "error: all 20 rows of this run fell back to the original question; last failure: row " in line
    assert "the server replied with content: null (no text, finish_reason 'length')" in line
    assert f"{out} was not written" in line and "they are not marked done" in line
    assert not out.exists()
    first = _state_rows(sidecar(out, ".state.jsonl"))
    assert len(first) == 20 and all(r["attempt_statuses"] == ["no_content"] * 3 for r in first)
    first_seeds = {q.question: {r["seed"] for r in scripted_server.by_question[q.question]} for q in math20}

    scripted_server.default = ["good"]
    assert main(args) == 0
    assert "resuming: 0 of 20 rows already done" in capsys.readouterr().err
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert (
        summary["successes"] == 20 and summary["retried_fallbacks"] == 20 and summary["rows_this_run"] == 20
    )
    for q in math20:  # every row asked again, with seeds it was not asked with before
        again = [r["seed"] for r in scripted_server.by_question[q.question][3:]]
        assert len(again) == 1 and again[0] not in first_seeds[q.question]
    log = [json.loads(x) for x in sidecar(out, ".log.jsonl").read_text().splitlines()]
    assert sorted(e["attempt"] for e in log if e["row"] == 0) == [0, 1, 2, 3]
    assert all(r["extra_info"]["rephrase_status"] == "ok" for r in pq.read_table(out).to_pylist())


def test_fallbacks_are_retried_by_a_rerun_unless_kept(scripted_server, math20, math20_path, tmp_path, capsys):
    for row, behaviour in HOPELESS.items():
        scripted_server.script[math20[row].question] = [behaviour]
    out = tmp_path / "r.parquet"
    args = _args(math20_path, out, scripted_server.url)
    assert main(args) == 0  # some rows fell back, most did not: an output, and a note
    err = capsys.readouterr().err
    assert "note: 4 row(s) fell back to the original question and are not marked done (first: row 2)" in err

    # rows 2 and 3 now get good replies; 6 and 8 still cannot be rewritten
    for row in (2, 3):
        scripted_server.script[math20[row].question] = ["good"]
    before = dict(scripted_server.calls)
    assert main(args) == 0
    assert "retrying 4 that fell back" in capsys.readouterr().err
    asked = {row for row, q in enumerate(math20) if scripted_server.calls[q.question] != before[q.question]}
    assert asked == set(HOPELESS)
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["successes"] == 18 and summary["resumed_rows"] == 16 and summary["retried_fallbacks"] == 4
    statuses = [r["extra_info"]["rephrase_status"] for r in pq.read_table(out).to_pylist()]
    assert [i for i, s in enumerate(statuses) if s == "failed"] == [6, 8]

    # --keep-fallbacks accepts them: nothing is asked
    n = len(scripted_server.requests)
    assert main([*args, "--keep-fallbacks"]) == 0
    assert len(scripted_server.requests) == n
    assert json.loads(sidecar(out, ".summary.json").read_text())["resumed_rows"] == 20

    # without it they are tried once more; all of this run fall back: an error, the output left as it was
    written = out.stat().st_mtime_ns
    assert main(args) == 2
    line = _error_line(capsys)
    assert "all 2 rows of this run fell back" in line
    # the last to fail of rows 6 and 8, which run concurrently: either may finish last
    assert (
        "last failure: row 8: the rewrite lost number(s)" in line
        or "last failure: row 6: the rewrite repeats the original question verbatim" in line
    ), line
    assert out.stat().st_mtime_ns == written


# ------------------------------------------------------------------------------------- giving up


def test_the_defaults_give_up_on_a_silent_server_within_minutes():
    """The old defaults (600 s x 7 tries + backoff) took ~70 min; the new ones stop within 5 minutes while
    still giving one reply minutes to arrive."""
    assert give_up_bound() <= 300 and give_up_bound() == GIVE_UP_AFTER_S
    assert REQUEST_TIMEOUT_S >= 120  # ~1k tokens of a 32B model on a busy server
    assert give_up_bound(request_timeout=600, retries=6, backoff=1, give_up_after=1e9) > 60 * 60  # the old
    backend = OpenAIChatBackend("http://127.0.0.1:1/v1", "m")
    timeout = backend._clients[0].timeout
    assert timeout.connect == CONNECT_TIMEOUT_S and timeout.read == REQUEST_TIMEOUT_S


def test_help_states_the_worst_case(capsys):
    with pytest.raises(SystemExit):
        main(["rephrase", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"never answers stops the run after at most {give_up_bound():g} s" in text


@pytest.mark.parametrize(
    ("limits", "bound"),
    [
        # the budget binds: 31 tries of 0.3 s and doubling backoffs would take minutes; --give-up-after
        # stops it at 1 s
        (["--http-retries", "30", "--give-up-after", "1"], 1.0),
        # the retries bind: two tries of 0.3 s and one short backoff
        (["--http-retries", "1", "--give-up-after", "60"], 0.61),
    ],
)
def test_a_server_that_never_answers_stops_the_run_within_the_bound(
    silent_server, math20_path, tmp_path, capsys, limits, bound
):
    assert give_up_bound(
        request_timeout=0.3, retries=int(limits[1]), backoff=0.01, give_up_after=float(limits[3])
    ) == pytest.approx(bound)
    out = tmp_path / "r.parquet"
    args = [
        *_args(math20_path, out, silent_server, "--limit", "4", "--concurrency", "2"),
        "--request-timeout", "0.3", "--backoff", "0.01", *limits,
    ]  # fmt: skip
    assert main(args) == 2
    waited = time.perf_counter() - silent_server.accepted[0]
    line = _error_line(capsys)
    assert "request timed out after 0.3s waiting for a reply" in line or (
        "request timed out after" in line and "--give-up-after 1s" in line
    )
    assert "gave up after" in line and line.endswith("; nothing was marked done")
    # timed from the first request reaching the server, so reading the input and starting up (1 to 5 s
    # on a busy 2-core machine) do not count: the waiting is wall-clock time, which load does not shorten,
    # and 2 s over the bound are still far less than the retries would take past the budget (minutes) or
    # the budget past the retries (60 s)
    assert bound * 0.9 <= waited < bound + 2.0, waited
    assert _state_rows(sidecar(out, ".state.jsonl")) == []


def test_a_refused_connection_stops_the_run_quickly(refused_url, math20_path, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    args = [*_args(math20_path, out, refused_url, "--limit", "2"), "--http-retries", "2", "--backoff", "0.01"]
    start = time.perf_counter()
    assert main(args) == 2
    # a refused connection is not waited on: one connect timeout per try would be 3 x 10 s
    assert time.perf_counter() - start < CONNECT_TIMEOUT_S
    line = _error_line(capsys)
    assert "connection error: ConnectError" in line and "gave up after 2 retries" in line


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--extra-body", "[1]"], "--extra-body: expected a JSON object, got list"),
        (["--api-base", "ftp://host/v1"], "--api-base: expected an http(s) URL"),
    ],
)
def test_bad_backend_options_are_found_before_any_file_or_request(
    scripted_server, math20_path, tmp_path, capsys, option, expected
):
    out = tmp_path / "r.parquet"
    assert main([*_args(math20_path, out, scripted_server.url), *option]) == 2
    assert expected in _error_line(capsys)
    assert scripted_server.requests == [] and list(tmp_path.iterdir()) == []
