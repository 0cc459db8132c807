"""``corewarding rephrase`` against a real HTTP server on 127.0.0.1 with scripted replies.

Every accounting number is asserted exactly: which attempts each row made and why they failed, HTTP
retries, what was kept or dropped, that the output pairs with the input through ``load_pairs``, and that
a run killed with SIGKILL resumes to exactly one result per row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corewarding.cli import main
from corewarding.data import load_pairs, load_questions
from corewarding.rephrase.cli import sidecar

# row -> (script of behaviours, expected attempt statuses, expected http retries); rows not listed: "good"
SCRIPT: dict[int, tuple[list[str], list[str], int]] = {
    0: (["good"], ["ok"], 0),
    1: (["malformed", "good"], ["unparsable", "ok"], 0),
    2: (["malformed"], ["unparsable"] * 3, 0),
    3: (["empty"], ["empty"] * 3, 0),
    4: (["empty_block", "good"], ["empty", "ok"], 0),
    5: (["verbatim", "good"], ["verbatim", "ok"], 0),
    6: (["verbatim"], ["verbatim"] * 3, 0),
    7: (["lost_number", "lost_number", "good"], ["lost_number", "lost_number", "ok"], 0),
    8: (["lost_number"], ["lost_number"] * 3, 0),
    9: (["http500", "good"], ["ok"], 1),
    10: (["slow:1.5", "good"], ["ok"], 1),  # beyond --request-timeout 0.5: retried like a 5xx
    11: (["http429", "http500", "good"], ["ok"], 2),
    12: (
        ["null", "good"],
        ["no_content", "ok"],
        0,
    ),  # content: null is a failed attempt, not an empty rewrite
    13: (["thinking"], ["ok"], 0),
    14: (["garbage200", "good"], ["ok"], 1),
    15: (["nousage"], ["ok"], 0),
}
FAILED_ROWS = [2, 3, 6, 8]


def _args(inp: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "rephrase", str(inp), "--limit", "20", "--out", str(out), "--api-base", url, "--model", "scripted",
        "--max-retries", "2", "--request-timeout", "0.5", "--http-retries", "3", "--backoff", "0.01",
        "--concurrency", "4", "--no-progress", "--api-key-env", "REPHRASE_TEST_KEY", *extra,
    ]  # fmt: skip


def _state_rows(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "row"]


@pytest.fixture
def scripted(scripted_server, math20):
    for row, (plan, _, _) in SCRIPT.items():
        scripted_server.script[math20[row].question] = plan
    return scripted_server


def test_retry_and_failure_accounting_is_exact(scripted, math20, math20_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPHRASE_TEST_KEY", "sk-test")
    out = tmp_path / "rephrased.parquet"
    assert main(_args(math20_path, out, scripted.url)) == 0

    records = {r["row"]: r for r in _state_rows(sidecar(out, ".state.jsonl"))}
    assert sorted(records) == list(range(20))
    for row in range(20):
        _, statuses, http_retries = SCRIPT.get(row, (["good"], ["ok"], 0))
        assert records[row]["attempt_statuses"] == statuses, row
        assert records[row]["http_retries"] == http_retries, row
        assert records[row]["status"] == ("failed" if row in FAILED_ROWS else "ok"), row

    summary = json.loads(sidecar(out, ".summary.json").read_text())
    expected_attempts = sum(len(SCRIPT.get(r, ([], ["ok"], 0))[1]) for r in range(20))
    assert expected_attempts == 34
    assert summary["rows"] == 20 and summary["written"] == 20
    assert summary["successes"] == 16 and summary["failures"] == 4
    assert summary["kept_original"] == 4 and summary["dropped"] == 0 and summary["dropped_rows"] == []
    assert summary["attempts"] == 34 and summary["retries"] == 14 and summary["http_retries"] == 5
    assert summary["attempt_statuses"] == {
        "empty": 4, "lost_number": 5, "no_content": 1, "ok": 16, "unparsable": 4, "verbatim": 4,
    }  # fmt: skip
    assert summary["failure_reasons"] == {"unparsable": 1, "empty": 1, "verbatim": 1, "lost_number": 1}
    assert summary["tokens"]["requests_without_usage"] == 1
    assert summary["tokens"]["prompt"] > 0 and summary["tokens"]["completion"] > 0
    assert summary["original_output"] is None and not sidecar(out, ".original.parquet").exists()
    assert "16 ok, 4 failed (4 kept as original, 0 dropped)" in capsys.readouterr().out

    # the server saw what the CLI promised: model, sampling, a new seed per attempt, the key
    first = scripted.requests[0]
    assert first["model"] == "scripted" and first["temperature"] == 0.7 and first["top_p"] == 0.8
    assert (
        first["max_tokens"] == 4096 and first["messages"][0]["role"] == "user" and len(first["messages"]) == 1
    )
    assert all(r["_auth"] == "Bearer sk-test" for r in scripted.requests)
    seeds = [r["seed"] for r in scripted.by_question[math20[2].question]]
    assert len(seeds) == 3 and len(set(seeds)) == 3
    retried = [r["seed"] for r in scripted.by_question[math20[9].question]]
    assert len(retried) == 2 and retried[0] == retried[1]  # an HTTP retry repeats the same request

    # every raw generation is in the log with its verdict
    log = [json.loads(x) for x in sidecar(out, ".log.jsonl").read_text().splitlines()]
    assert len(log) == 34
    assert {(e["row"], e["attempt"]) for e in log} == {
        (r, a) for r in range(20) for a in range(len(SCRIPT.get(r, ([], ["ok"], 0))[1]))
    }
    row8 = [e for e in log if e["row"] == 8]
    assert all(e["status"] == "lost_number" and "lost number" in e["reason"] and e["reply"] for e in row8)

    # the output pairs with the input: same golds and indices, failures kept as the original question
    pairs = load_pairs(math20_path, out, limit=20)
    assert len(pairs) == 20
    for row, (orig, reph) in enumerate(pairs):
        info = reph.extra["extra_info"]
        assert info["original_question"] == orig.question and info["index"] == orig.extra["index"]
        assert reph.gold == orig.gold and reph.messages[0] == orig.messages[0]
        if row in FAILED_ROWS:
            assert info["rephrase_status"] == "failed" and reph.question == orig.question
        else:
            assert info["rephrase_status"] == "ok" and reph.question == scripted.good_rewrite(orig.question)


def test_drop_writes_an_aligned_original_file(scripted, math20, math20_path, tmp_path, capsys):
    out = tmp_path / "dropped.parquet"
    assert main(_args(math20_path, out, scripted.url, "--on-failure", "drop")) == 0
    original_out = sidecar(out, ".original.parquet")
    assert pq.read_table(out).num_rows == 16 and pq.read_table(original_out).num_rows == 16
    pairs = load_pairs(original_out, out)
    kept_indices = [a.extra["index"] for a, _ in pairs]
    assert kept_indices == [math20[r].extra["index"] for r in range(20) if r not in FAILED_ROWS]
    assert all(b.extra["extra_info"]["rephrase_status"] == "ok" for _, b in pairs)
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["dropped"] == 4 and summary["kept_original"] == 0
    assert [d["row"] for d in summary["dropped_rows"]] == FAILED_ROWS
    assert all(d["reason"].startswith("rephrase failed") for d in summary["dropped_rows"])
    assert "dropped: row 2 (rephrase failed" in capsys.readouterr().out


def test_dead_endpoint_stops_the_run_and_the_same_command_resumes(
    scripted_server, math20, math20_path, tmp_path, capsys
):
    # rows 0-5 answer, the rest get HTTP 503 forever: the run must stop, not record 14 "failed rewrites"
    for q in math20[6:]:
        scripted_server.script[q.question] = ["http503"]
    out = tmp_path / "r.parquet"
    args = _args(math20_path, out, scripted_server.url, "--http-retries", "2", "--concurrency", "1")
    assert main(args) == 2
    assert "gave up after 2 retries" in capsys.readouterr().err
    done = _state_rows(sidecar(out, ".state.jsonl"))
    assert [r["row"] for r in done] == [0, 1, 2, 3, 4, 5] and all(r["status"] == "ok" for r in done)
    assert not out.exists()

    scripted_server.script.clear()  # the server recovers
    before = dict(scripted_server.calls)
    assert main(args) == 0
    assert all(scripted_server.calls[q.question] == before[q.question] for q in math20[:6])  # not asked again
    rows = _state_rows(sidecar(out, ".state.jsonl"))
    assert sorted(r["row"] for r in rows) == list(range(20))
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["resumed_rows"] == 6 and summary["rows_this_run"] == 14 and summary["successes"] == 20

    # a different configuration must not be mixed into the same state
    assert main([*args, "--temperature", "0.9"]) == 2
    assert "different input or settings" in capsys.readouterr().err
    # ... unless asked to start over, which also discards the old log
    n_requests = len(scripted_server.requests)
    assert main([*args, "--temperature", "0.9", "--restart"]) == 0
    assert len(sidecar(out, ".log.jsonl").read_text().splitlines()) == 20
    assert [r["temperature"] for r in scripted_server.requests[n_requests:]] == [0.9] * 20


def test_answer_check_flags_and_drops_disagreeing_pairs(scripted_server, math20, math20_path, tmp_path):
    """Row 0's rewrite is 'solved' to another answer (disagree), row 1's original gets no answer."""
    originals = {q.question: q for q in math20}

    head, tail = scripted_server.good_rewrite("|").split("|")

    def solver(question: str, n: int) -> list[str]:
        rephrased = question.startswith(head) and question.endswith(tail)
        q = originals[question[len(head) : -len(tail)] if rephrased else question]
        if q is math20[0] and rephrased:
            return ["so the answer is \\boxed{12345}"] * n
        if q is math20[1] and not rephrased:
            return ["I cannot solve this."] * n
        return [f"... \\boxed{{{q.gold}}}"] * (n - 1) + ["\\boxed{7}"]

    scripted_server.solver = solver
    out = tmp_path / "checked.parquet"
    args = _args(
        math20_path, out, scripted_server.url, "--limit", "6",
        "--check-answers", "solver-model", "--check-backend", "api", "--check-k", "3", "--drop-disagreeing",
    )  # fmt: skip
    assert main(args) == 0
    checks = [r for r in scripted_server.requests if "n" in r]
    assert len(checks) == 12 and all(r["n"] == 3 and r["model"] == "solver-model" for r in checks)
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["answer_check"]["checked"] == 6
    assert summary["answer_check"]["agree"] == 4
    assert summary["answer_check"]["disagree"] == 1 and summary["answer_check"]["undetermined"] == 1
    assert summary["answer_check"]["dropped"] == 1 and summary["dropped_rows"][0]["row"] == 0
    pairs = load_pairs(sidecar(out, ".original.parquet"), out)
    assert [a.extra["index"] for a, _ in pairs] == [1, 2, 3, 4, 5]
    check1 = pairs[0][1].extra["extra_info"]["answer_check"]
    assert check1 == {"original_majority": None, "rephrased_majority": math20[1].gold, "agree": None}
    check2 = pairs[1][1].extra["extra_info"]["answer_check"]
    assert check2["agree"] is True and check2["original_majority"] == math20[2].gold


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exactly_one_row_each(
    scripted_server, math20, math20_path, tmp_path
):
    scripted_server.delay = 0.25  # 20 rows at concurrency 2: about 2.5 s, so the kill lands mid-run
    scripted_server.script[math20[3].question] = ["malformed", "good"]
    out = tmp_path / "killed.parquet"
    state = sidecar(out, ".state.jsonl")
    cmd = [
        sys.executable,
        "-m",
        "corewarding",
        *_args(math20_path, out, scripted_server.url, "--concurrency", "2"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if state.exists() and len(_state_rows(state)) >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done_before = {r["row"] for r in _state_rows(state)}
    assert 6 <= len(done_before) < 20 and not out.exists()
    calls_before = dict(scripted_server.calls)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming: {len(done_before)} of 20 rows already done" in rerun.stderr
    rows = _state_rows(state)
    assert sorted(r["row"] for r in rows) == list(range(20))  # exactly one record per row, no duplicates
    for q in (math20[r] for r in done_before):
        assert scripted_server.calls[q.question] == calls_before[q.question]  # finished rows not redone
    table = pq.read_table(out)
    assert table.num_rows == 20
    assert [i["index"] for i in table.column("extra_info").to_pylist()] == [q.extra["index"] for q in math20]
    pairs = load_pairs(math20_path, out, limit=20)
    assert all(b.question == scripted_server.good_rewrite(a.question) for a, b in pairs)
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["resumed_rows"] == len(done_before) and summary["successes"] == 20
    if 3 in done_before:  # row 3's malformed first reply is in the state: counted once, not lost or doubled
        assert summary["retries"] == 1


def test_throughput_against_the_scripted_server(scripted_server, math20_path, tmp_path, capsys):
    """200 rows, no server delay, concurrency 16: the pipeline itself must not be the bottleneck."""
    out = tmp_path / "fast.parquet"
    args = [
        "rephrase", str(math20_path), "--limit", "200", "--out", str(out), "--api-base", scripted_server.url,
        "--model", "scripted", "--concurrency", "16", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(sidecar(out, ".summary.json").read_text())
    assert summary["successes"] == 200
    print(f"\nthroughput: {summary['rows_per_second']} rows/s over 200 rows ({summary['seconds']} s)")
    assert summary["rows_per_second"] > 20
    assert len(load_questions(out)) == 200
