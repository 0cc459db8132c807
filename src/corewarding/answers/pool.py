"""A small pool of persistent worker processes with a hard per-task deadline.

Why not ``concurrent.futures`` or ``multiprocessing.Pool``: a task that hangs inside C code (sympy
evaluating ``9^{9^{9}}`` is one big-integer power in CPython, deaf to ``signal.alarm``) can only be
stopped by killing its process, and killing a worker breaks those pools. Here each worker owns a pair
of pipes; the parent hands it one task at a time, waits on all pipes until the nearest deadline, and
kills and replaces a worker that overruns. The batch continues and the overrun task gets the caller's
default.

Workers are fresh interpreters (``subprocess``), not ``multiprocessing`` children: they need nothing from
the parent, so the caller's script needs no ``if __name__ == "__main__"`` guard, no start-method or
forkserver setting is touched, and forking a parent full of torch threads never happens. A fresh
interpreter takes about a second to import math-verify, so the pool keeps one ready spare that takes a
killed worker's place at once.

A worker whose parent died mid-task must not compute ``9^{9^{9}}`` forever as an orphan: each task runs
under a CPU-time limit a little above its deadline (``RLIMIT_CPU``), which the kernel enforces even
inside C code. Address space is capped too, so a runaway computation dies with ``MemoryError``.

Tasks name their function as ``"module:qualname"`` so the parent never imports what the workers run.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_READY = "ready"
# A worker that has not said "ready" by then is considered broken (a cold interpreter importing sympy on
# a busy machine takes a few seconds; minutes mean something is wrong).
STARTUP_TIMEOUT_S = 120.0
# Give up on a pool whose workers keep dying before they become ready (a broken install, not bad input).
_MAX_STARTUP_FAILURES = 3
WORKER_MEMORY_BYTES = 4 * 1024**3
# CPU seconds a task may use beyond its wall-clock deadline before the kernel ends the worker. A task's
# CPU time never exceeds its wall time, so a live parent always kills first; this only ends orphans.
_CPU_GRACE_S = 2
_PRELOAD = ("corewarding.answers._mathcheck",)
_SERVE = "import sys; from corewarding.answers.pool import serve; serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])"


# ---------------------------------------------------------------------------------------------------
# worker side


def _resolve(name: str) -> Callable[..., Any]:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _set_limits() -> None:
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_BYTES)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a worker ended by RLIMIT_CPU dumps no core
    except (ImportError, ValueError, OSError):  # not on this platform / not permitted: run unlimited
        pass


def _limit_cpu(seconds: float) -> None:
    """Let the current task use at most ``seconds`` more CPU time (SIGXCPU ends the worker after)."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(used + seconds) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def serve(read_fd: int, write_fd: int, preload: Sequence[str] = ()) -> None:
    """Worker loop: receive ``(function name, args, timeout)``, reply ``(ok, value)``; stop on ``None``/EOF."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    _set_limits()
    for module in preload:
        warm_up = getattr(importlib.import_module(module), "warm_up", None)
        if callable(warm_up):  # pay first-use costs (parser set-up) before saying "ready"
            warm_up()
    outbox.send(_READY)
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable task: report it, keep serving
            outbox.send((False, f"{type(exc).__name__}: {exc}"[:500]))
            continue
        if message is None:
            return
        name, args, timeout = message
        _limit_cpu(timeout + _CPU_GRACE_S)
        try:
            reply = (True, _resolve(name)(*args))
        except BaseException as exc:  # MemoryError, RecursionError, anything: the task failed, not the worker
            reply = (False, f"{type(exc).__name__}: {exc}"[:500])
        try:
            outbox.send(reply)
        except Exception:
            outbox.send((False, "result could not be sent back"))


# ---------------------------------------------------------------------------------------------------
# parent side


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the folder holding ``corewarding`` first on ``PYTHONPATH``, so a
    worker imports the same code even when the parent found it through ``sys.path`` tweaks."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class _Worker:
    """One worker process and the parent's ends of its two pipes."""

    def __init__(self, preload: Sequence[str]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(to_child_r), str(from_child_w), *preload],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the caller's stdout is theirs (e.g. `grade` prints results)
                env=_worker_env(),
            )
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        self.ready = False
        self.started_at = time.monotonic()
        self.task: tuple[int, float] | None = None  # (index in the batch, deadline)

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:  # already gone
            pass
        self._close()

    def stop(self) -> None:
        try:
            self.outbox.send(None)
            self.process.wait(timeout=0.5)
        except Exception:
            pass
        if self.process.poll() is None:
            self.kill()
        else:
            self._close()

    def _close(self) -> None:
        for conn in (self.outbox, self.inbox):
            with contextlib.suppress(OSError):
                conn.close()


@dataclass
class PoolStats:
    """Counters that tell whether the guards are firing (worth logging per training step)."""

    tasks: int = 0
    timeouts: int = 0
    errors: int = 0
    crashes: int = 0
    restarts: int = 0


class TimeoutPool:
    """``n_workers`` persistent processes (plus ``spares`` idle ones) running named functions with a hard
    per-task deadline.

    Thread-safe (one ``map`` at a time). Never raises for a task's sake: a task that errors, overruns or
    crashes its worker gets ``default``.
    """

    def __init__(self, n_workers: int = 2, preload: Sequence[str] = _PRELOAD, spares: int = 1) -> None:
        if n_workers < 1 or spares < 0:
            raise ValueError(f"need n_workers >= 1 and spares >= 0, got {n_workers} and {spares}")
        self.n_workers = n_workers
        self.n_spares = spares
        self.preload = tuple(preload)
        self.stats = PoolStats()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._spares: list[_Worker] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait_ready: bool = True) -> None:
        """Start the workers now (otherwise the first ``map`` does), optionally waiting until they serve."""
        with self._lock:
            self._ensure_workers()
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while wait_ready and not all(w.ready for w in self._workers) and time.monotonic() < deadline:
                self._poll(time.monotonic(), lambda *_: None, None)

    def close(self) -> None:
        """Stop all workers (idempotent; the next ``map`` starts new ones). A forked child never stops its
        parent's workers."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            for worker in self._workers + self._spares:
                worker.stop()
            self._workers, self._spares = [], []

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the active workers (not the spares)."""
        return [w.process.pid for w in self._workers]

    def _ensure_workers(self) -> None:
        while len(self._workers) < self.n_workers:
            self._workers.append(self._spares.pop(0) if self._spares else _Worker(self.preload))
        # Spares start only once the active workers serve, so they never slow the first comparisons.
        if all(w.ready for w in self._workers):
            while len(self._spares) < self.n_spares:
                self._spares.append(_Worker(self.preload))

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker``; a spare (already warm, usually) takes its place and a new spare starts."""
        worker.kill()
        self.stats.restarts += 1
        if worker in self._spares:
            self._spares.remove(worker)
        else:
            self._workers.remove(worker)
        self._ensure_workers()

    # -- work --------------------------------------------------------------------------------------------
    def map(
        self,
        function: str,
        arg_tuples: Sequence[tuple],
        timeout: float,
        default: Any = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run ``function(*args)`` for every tuple in ``arg_tuples``; results in order.

        ``function`` is ``"module:qualname"``. Each task gets ``timeout`` seconds from the moment a ready
        worker receives it; past that the worker is killed and replaced and the task's result is
        ``default`` (as for a task that raised or crashed its worker). ``on_result(index, value)`` is
        called as each task finishes (progress bars).
        """
        results: list[Any] = [default] * len(arg_tuples)
        if not arg_tuples:
            return results

        def finish(index: int, value: Any) -> None:
            results[index] = value
            if on_result is not None:
                on_result(index, value)

        with self._lock:
            self.stats.tasks += len(arg_tuples)
            queue: deque[int] = deque(range(len(arg_tuples)))
            self._ensure_workers()
            startup_failures = 0
            while queue or any(w.task is not None for w in self._workers):
                now = time.monotonic()
                for worker in list(self._workers):
                    if not (worker.ready and worker.task is None and queue):
                        continue
                    index = queue.popleft()
                    try:
                        worker.outbox.send((function, tuple(arg_tuples[index]), timeout))
                    except (OSError, EOFError):  # the worker died between tasks: retry on its replacement
                        queue.appendleft(index)
                        self._replace(worker)
                        continue
                    except Exception as exc:  # unpicklable arguments: this task fails, nothing else
                        log.debug("task %d could not be sent: %s", index, exc)
                        self.stats.errors += 1
                        finish(index, default)
                        continue
                    worker.task = (index, now + timeout)
                startup_failures += self._poll(now, finish, default)
                if startup_failures > _MAX_STARTUP_FAILURES and queue:
                    log.error("answer-checking workers fail to start; %d tasks get the default", len(queue))
                    while queue:
                        finish(queue.popleft(), default)
        return results

    def _poll(self, now: float, finish: Callable[[int, Any], None], default: Any) -> int:
        """Wait for the next reply or deadline; handle replies, overruns and deaths. Returns how many
        workers failed to start."""
        starting = [w for w in self._workers + self._spares if not w.ready]
        busy = [w for w in self._workers if w.task is not None]
        watched = {w.inbox: w for w in starting + busy}
        if not watched:
            return 0
        deadlines = [w.task[1] for w in busy if w.task is not None]
        deadlines += [w.started_at + STARTUP_TIMEOUT_S for w in starting]
        failures = 0
        for conn in wait(list(watched), timeout=max(0.0, min(deadlines) - now)):
            worker = watched[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the worker died (segfault, OOM kill, CPU limit)
                if worker.task is not None:
                    self.stats.crashes += 1
                    finish(worker.task[0], default)
                else:
                    failures += 1
                self._replace(worker)
                continue
            except Exception:  # a reply that cannot be unpickled counts as an error
                message = (False, "unreadable reply")
            if message == _READY and not worker.ready:
                worker.ready = True
                self._ensure_workers()
                continue
            if worker.task is None:  # nothing asked; ignore
                continue
            index = worker.task[0]
            worker.task = None
            ok, value = message
            if not ok:
                self.stats.errors += 1
                log.debug("task %d failed in the worker: %s", index, value)
            finish(index, value if ok else default)
        now = time.monotonic()
        for worker in list(self._workers + self._spares):
            if worker.task is not None and now >= worker.task[1]:
                self.stats.timeouts += 1
                finish(worker.task[0], default)
                self._replace(worker)
            elif not worker.ready and now >= worker.started_at + STARTUP_TIMEOUT_S:
                failures += 1
                self._replace(worker)
        return failures


_POOL: TimeoutPool | None = None
_POOL_LOCK = threading.Lock()


def default_workers() -> int:
    """Workers for the shared pool: ``$COREWARDING_ANSWER_WORKERS``, else min(2, CPU count)."""
    env = os.environ.get("COREWARDING_ANSWER_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


def get_pool() -> TimeoutPool:
    """The process-wide pool, started lazily. A forked child gets its own pool, never its parent's."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = TimeoutPool(default_workers())
        return _POOL


def shutdown_pool() -> None:
    """Stop the shared pool's workers (registered at exit; safe any time: the next use starts new ones)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.close()


atexit.register(shutdown_pool)
