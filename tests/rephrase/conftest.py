"""Fixtures for the rephraser: a real OpenAI-compatible HTTP server with scripted replies, real questions.

The server is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 that speaks ``POST /v1/chat/completions``.
Each request is answered by a *behaviour* looked up by the question it carries (the text after the
rewriting instruction, or the user message of an answer-check request) and by how many times that
question was asked before, so a test scripts e.g. "HTTP 500, then a good rewrite" for one row.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from corewarding.rephrase.prompt import default_instruction


def good_rewrite(question: str) -> str:
    """A rewrite that passes every check: new wording around the same text, all numbers kept."""
    return f"Here is the same task told differently. {question} Give the exact answer."


def reply_block(rewrite: str, original: str = "<original>") -> str:
    return f"### RESULT_START\nORIGINAL:\n{original}\nREWRITE:\n{rewrite}\n### RESULT_END"


@dataclass
class Reply:
    """What the server sends for one request."""

    content: str | list[str] | None = None
    status: int = 200
    delay: float = 0.0
    usage: bool = True
    raw_body: str | None = None
    finish_reason: str = "stop"


def behaviour_reply(kind: str, question: str) -> Reply:
    """The scripted behaviours named in the tests."""
    if kind == "good":
        return Reply(reply_block(good_rewrite(question), question))
    if kind == "malformed":
        return Reply("Sure! Here is a rewritten version: " + good_rewrite(question))
    if kind == "empty":
        return Reply("")
    if kind == "empty_block":
        return Reply(reply_block("", question))
    if kind == "verbatim":
        return Reply(reply_block("  " + question.replace(" ", "\n ", 3) + "\n", question))
    if kind == "lost_number":
        stripped = "".join(ch for ch in question if not ch.isdigit())
        return Reply(reply_block("Rephrased without its figures: " + stripped, question))
    if kind == "thinking":
        draft = reply_block("a draft that drops everything", question)
        return Reply(
            f"<think>Let me draft.\n{draft}\n</think>\n" + reply_block(good_rewrite(question), question)
        )
    if kind == "http500":
        return Reply(status=500, raw_body='{"error": "internal"}')
    if kind == "http503":
        return Reply(status=503, raw_body='{"error": "overloaded"}')
    if kind == "http429":
        return Reply(status=429, raw_body='{"error": "rate limited"}')
    if kind == "http400":
        return Reply(status=400, raw_body='{"error": "prompt too long"}')
    if kind == "http401":
        return Reply(status=401, raw_body='{"error": "Unauthorized: missing API key"}')
    if kind == "http404":  # what vLLM says to a wrong --model
        return Reply(
            status=404,
            raw_body='{"object": "error", "message": "The model `wrong` does not exist.", "type": "NotFoundError"}',
        )
    if kind == "http422":
        return Reply(status=422, raw_body='{"detail": "temperature: value is not a valid float"}')
    if kind == "null":  # a reasoning model that spent max_tokens thinking, behind a reasoning parser
        return Reply(None, finish_reason="length")
    if kind == "garbage200":
        return Reply(status=200, raw_body="<html>proxy error</html>")
    if kind.startswith("slow"):  # "slow:2.0" sleeps 2 s and then answers well
        return Reply(reply_block(good_rewrite(question), question), delay=float(kind.split(":")[1]))
    if kind == "nousage":
        return Reply(reply_block(good_rewrite(question), question), usage=False)
    raise ValueError(f"unknown behaviour {kind!r}")


@dataclass
class ScriptedServer:
    """Holds the script (question → list of behaviours, the last repeating) and records every request."""

    url: str = ""
    script: dict[str, list[str]] = field(default_factory=dict)
    default: list[str] = field(default_factory=lambda: ["good"])
    delay: float = 0.0  # added to every reply
    solver: Callable[[str, int], list[str]] | None = None  # answer-check requests: (question, n) -> replies
    requests: list[dict] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)
    by_question: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    good_rewrite = staticmethod(good_rewrite)

    def question_of(self, body: dict) -> tuple[str, bool]:
        """(question, is_rephrase_request) for a request body."""
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        instruction = default_instruction().rstrip("\n") + "\n\n"
        if user.startswith(instruction):
            return user[len(instruction) :], True
        return user, False

    def respond(self, body: dict) -> Reply:
        question, is_rephrase = self.question_of(body)
        with self.lock:
            self.requests.append(body)
            self.by_question[question].append(body)
            k = self.calls[question]
            self.calls[question] += 1
        if not is_rephrase:
            assert self.solver is not None, "answer-check request but the test set no solver"
            return Reply(self.solver(question, int(body.get("n", 1))))
        plan = self.script.get(question, self.default)
        return behaviour_reply(plan[min(k, len(plan) - 1)], question)


def _handler(server_state: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1  # headers and body in one send: no Nagle/delayed-ACK stall per keep-alive request

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            body["_auth"] = self.headers.get("Authorization")
            if self.path != "/v1/chat/completions":
                self._send(404, '{"error": "not found"}')
                return
            reply = server_state.respond(body)
            if reply.delay or server_state.delay:
                time.sleep(reply.delay + server_state.delay)
            if reply.raw_body is not None:
                self._send(reply.status, reply.raw_body)
                return
            contents = reply.content if isinstance(reply.content, list) else [reply.content]
            payload = {
                "id": "cmpl-test",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": c},
                        "finish_reason": reply.finish_reason,
                    }
                    for i, c in enumerate(contents)
                ],
            }
            if reply.usage:
                completion = sum(len((c or "").split()) for c in contents)
                prompt = sum(len(m["content"].split()) for m in body["messages"])
                payload["usage"] = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
            self._send(reply.status, json.dumps(payload))

        def _send(self, status: int, text: str) -> None:
            data = text.encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (request timeout); nothing to do

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that timed out or was killed resets its connection; that is expected here."""


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    state = ScriptedServer()
    httpd = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def math20_path(shared_data) -> Path:
    return shared_data / "train" / "math" / "train_original.parquet"


@pytest.fixture(scope="session")
def math20(math20_path):
    """The first 20 real MATH training questions."""
    from corewarding.data import load_questions

    return load_questions(math20_path, limit=20)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, math20) -> Path:
    """A random tiny Qwen3ForCausalLM with a BPE tokenizer trained here and a ChatML chat template."""
    from corewarding.models.tiny import build_tiny_model

    texts = [q.question for q in math20] + [default_instruction()] * 3
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, vocab_size=400)


class SilentServerURL(str):
    """A URL (a ``str``) that also carries the silent server's connection times."""

    accepted: list[float]

    def __new__(cls, url: str, accepted: list[float]) -> SilentServerURL:
        self = super().__new__(cls, url)
        self.accepted = accepted
        return self


@pytest.fixture
def silent_server() -> Iterator[SilentServerURL]:
    """An ``/v1`` URL whose socket accepts connections and reads nothing, never answering (a hung server).

    Its ``accepted`` lists when (``time.perf_counter()``) each connection came in."""
    accepted: list[float] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:  # the 0.05 s accept timeout, or the socket closed at teardown
                continue
            accepted.append(time.perf_counter())
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield SilentServerURL(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", accepted)
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        sock.close()


@pytest.fixture
def refused_url() -> str:
    """An ``/v1`` URL on a port nobody listens on: every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
