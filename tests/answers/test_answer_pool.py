"""The worker pool and the batch API: deadlines, kill-and-replace, crashes, hostile batches, lifecycle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from corewarding.answers import TimeoutPool, batch_equivalent, clear_cache, get_pool, shutdown_pool
from corewarding.answers.pool import _CPU_GRACE_S


@pytest.fixture
def bare_pool():
    """A pool whose workers preload nothing (starts fast) for testing the mechanics on builtins."""
    pool = TimeoutPool(n_workers=2, preload=())
    pool.start()
    yield pool
    pool.close()


def test_hung_worker_is_killed_and_replaced_and_the_batch_continues(bare_pool: TimeoutPool) -> None:
    tasks = [(2, 10)] * 6 + [(9, 9**9)] + [(3, 3)] * 6 + [(9, 9**9)] + [(2, 5)] * 6
    pids_before = set(bare_pool.worker_pids)
    start = time.monotonic()
    results = bare_pool.map("builtins:pow", tasks, timeout=1.0, default="timed out")
    elapsed = time.monotonic() - start
    # 9 ** 387420489 is one C-level computation that no signal interrupts: only a kill stops it.
    assert results == [1024] * 6 + ["timed out"] + [27] * 6 + ["timed out"] + [32] * 6
    assert bare_pool.stats.timeouts == 2
    assert bare_pool.stats.restarts == 2
    # each hung task stops at its 1 s deadline (9 ** 387420489 alone runs for hours); 10 s more cover two
    # replacement workers starting and the 18 short tasks on a busy 2-core machine
    assert elapsed < 2 * 1.0 + 10.0
    assert len(set(bare_pool.worker_pids) - pids_before) >= 1  # fresh processes took over
    assert bare_pool.map("builtins:pow", [(2, 3)], timeout=1.0) == [8]


def test_errors_and_crashes_cost_one_task(bare_pool: TimeoutPool) -> None:
    results = bare_pool.map("math:sqrt", [(4.0,), (-1.0,), (9.0,)], timeout=2.0, default=-1.0)
    assert results == [2.0, -1.0, 3.0]
    assert bare_pool.stats.errors == 1
    crashed = bare_pool.map("os:_exit", [(3,)], timeout=2.0, default="crashed")
    assert crashed == ["crashed"]
    assert bare_pool.stats.crashes == 1
    assert bare_pool.map("no.such.module:fn", [()], timeout=2.0, default="missing") == ["missing"]
    assert bare_pool.map("math:sqrt", [(16.0,)], timeout=2.0) == [4.0]


def test_on_result_reports_every_task(bare_pool: TimeoutPool) -> None:
    seen: list[tuple[int, object]] = []
    results = bare_pool.map(
        "builtins:abs", [(-i,) for i in range(25)], timeout=2.0, on_result=lambda i, v: seen.append((i, v))
    )
    assert results == list(range(25))
    assert sorted(seen) == [(i, i) for i in range(25)]


def test_orphaned_worker_is_ended_by_its_cpu_limit(tmp_path: Path) -> None:
    """A parent that dies mid-task cannot kill its worker; the per-task CPU limit does."""
    script = tmp_path / "orphan.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys, threading, time
        from corewarding.answers import TimeoutPool
        pool = TimeoutPool(n_workers=1, preload=(), spares=0)
        pool.start()
        print(pool.worker_pids[0], flush=True)
        threading.Thread(target=pool.map, args=("builtins:pow", [(9, 9**9)], 1.0), daemon=True).start()
        time.sleep(0.5)
        os._exit(0)  # no clean-up: the worker is orphaned mid-task
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 1.0 + _CPU_GRACE_S + 60  # CPU seconds come slowly on a busy machine
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.25)
    assert not _alive(pid), f"orphaned worker {pid} still running"


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except OSError:
        return False


def test_forked_child_gets_its_own_pool() -> None:
    parent_pool = get_pool()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 0 if get_pool() is not parent_pool and get_pool()._pid == os.getpid() else 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get_pool() is parent_pool


def _variant(gold: str) -> str:
    """An equivalent but differently written answer, so the comparison needs math-verify or a fast path."""
    if re.fullmatch(r"-?\d+", gold):
        return f"{gold}.0"
    frac = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", gold)
    if frac:
        return f"\\dfrac{{{frac.group(1)}}}{{{frac.group(2)}}}"
    return f"${gold}$"


def test_hostile_batch_of_256_finishes_fast(shared_data: Path) -> None:
    rows = [json.loads(line) for line in (shared_data / "benchmarks" / "math500.jsonl").open()]
    golds = [row["answer"].rsplit("The answer is:", 1)[1].strip() for row in rows]
    hostile = ["9^{9^{9^{9^{9}}}}", "x" * 200_000, "\\boxed{" * 5000]
    pairs: list[tuple[str, str]] = []
    expected: list[bool | None] = []
    for i in range(240):
        if i % 2:
            pairs.append((_variant(golds[i]), golds[i]))
            expected.append(True)
        else:
            pairs.append((golds[i + 1], golds[i]))  # a wrong answer: the next question's gold
            expected.append(None)  # usually False; a coincidence (both "2") is allowed
    for k in range(16):
        pairs.insert(k * 16 + 7, (hostile[k % 3], golds[300 + k]))  # a different gold each time
        expected.insert(k * 16 + 7, False)

    pool = get_pool()
    pool.start()  # the pool persists across steps; its one-off start-up is not part of a step
    clear_cache()
    timeouts = pool.stats.timeouts
    start = time.monotonic()
    results = batch_equivalent(pairs)
    elapsed = time.monotonic() - start
    print(f"\nhostile batch: 256 comparisons in {elapsed:.2f}s (timeouts so far: {pool.stats.timeouts})")

    assert len(results) == 256
    # what keeps a hostile batch fast: every hostile answer is turned away by a guard (the length cap, the
    # magnitude guard) and none waits for the kill switch. Load-independent, unlike the wall clock: each
    # of the 16 that reached sympy would cost a 2 s timeout here.
    assert pool.stats.timeouts == timeouts
    assert elapsed < 30.0  # about 3 s on an idle 2-core machine; generous for a busy one
    for pair, want, got in zip(pairs, expected, results, strict=True):
        if want is not None:
            assert got is want, pair[0][:50]
    wrong_matches = sum(got for want, got in zip(expected, results, strict=True) if want is None)
    assert wrong_matches <= 12  # mismatched golds rarely coincide


def test_shutdown_stops_workers_and_a_new_pool_follows() -> None:
    pool = get_pool()
    pool.start()
    pids = pool.worker_pids
    shutdown_pool()
    time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)
    assert get_pool() is not pool  # the next use starts a fresh pool
