"""Where rewrites (and answer-check solutions) come from: an HTTP endpoint or a local model.

All backends expose one coroutine, ``complete(messages, n=..., sampling=...) -> Completion``, so the
pipeline runs every row as its own task with bounded concurrency and never cares what answers it.

* :class:`OpenAIChatBackend` — any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, hosted
  APIs). Transient failures (connection errors, timeouts, 408/429/5xx, a 200 whose body is not a chat
  completion) are retried with exponential backoff, honouring ``Retry-After``. When they persist the run
  stops with :class:`EndpointUnavailable`: a dead server must not turn every row into a "failed rewrite"
  (the rows done so far are saved; the same command resumes). Other 4xx answers are specific to one
  request (e.g. a prompt too long for the context) and become :class:`RequestRejected`, a failed attempt
  of that row only.
* :class:`BatchingBackend` — a local model. Row tasks submit single requests; a collector gathers what is
  pending into one batched ``generate`` call, run in a worker thread so the event loop keeps serving
  (progress, state writes). :class:`EngineRunner` drives the project's rollout engines
  (``HFRolloutEngine``; ``VLLMRolloutEngine`` when vllm is installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from corewarding.errors import ConfigError, CorewardingError
from corewarding.rollout.types import SamplingParams

Messages = list[dict[str, str]]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
CONNECTIONS_PER_CLIENT = 8


def _shard_sizes(total: int, per_shard: int) -> list[int]:
    """Split ``total`` connections into shards of at most ``per_shard`` (``_shard_sizes(20, 8)`` = 8, 8, 4)."""
    return [min(per_shard, total - start) for start in range(0, total, per_shard)]


class EndpointUnavailable(CorewardingError):
    """The backend kept failing transiently past the retry budget; the run stops (and can be resumed)."""


class RequestRejected(Exception):
    """The backend refused this one request for good (a 4xx other than 408/429): the attempt fails."""

    def __init__(self, message: str, http_retries: int = 0):
        super().__init__(message)
        self.http_retries = http_retries


@dataclass
class Completion:
    """``n`` replies to one request, the token usage when known, and how it was obtained."""

    texts: list[str]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    http_retries: int = 0
    seed: int | None = None  # the seed the sampler actually used, when known (a batch shares one on HF)
    latency_s: float = 0.0


class Backend(Protocol):
    """Something that answers chat requests; see the module docstring."""

    model_name: str
    default_concurrency: int

    async def complete(self, messages: Messages, *, n: int, sampling: SamplingParams) -> Completion: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------- HTTP


class OpenAIChatBackend:
    """POSTs ``{api_base}/chat/completions`` with httpx; at most ``concurrency`` requests in flight.

    ``request_timeout`` bounds each HTTP request as a whole (connect to last byte); a timeout counts as a
    transient failure. ``tokenizer`` (optional) counts tokens when the server's reply has no ``usage``.
    """

    default_concurrency = 8

    def __init__(
        self,
        api_base: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        request_timeout: float = 600.0,
        max_http_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        extra_body: dict[str, Any] | None = None,
        tokenizer: Any = None,
    ):
        import httpx

        if not api_base.startswith(("http://", "https://")):
            raise ConfigError(
                f"--api-base: expected an http(s) URL such as http://localhost:8000/v1, got {api_base!r}"
            )
        if concurrency < 1:
            raise ConfigError(f"--concurrency: expected a positive integer, got {concurrency}")
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.model_name = model
        self.request_timeout = float(request_timeout)
        self.max_http_retries = int(max_http_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.extra_body = dict(extra_body or {})
        self.tokenizer = tokenizer
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # httpcore's pool does O(connections) bookkeeping per request event, so one pool of hundreds of
        # connections burns more client CPU than a big server's throughput allows. The concurrency is
        # split into slots over small clients instead; taking a slot also bounds requests in flight.
        self._clients = [
            httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.request_timeout),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in _shard_sizes(concurrency, CONNECTIONS_PER_CLIENT)
        ]
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for index, size in enumerate(_shard_sizes(concurrency, CONNECTIONS_PER_CLIENT)):
            for _ in range(size):
                self._slots.put_nowait(index)
        self._httpx = httpx

    def payload(self, messages: Messages, n: int, sampling: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k  # a vLLM/SGLang extension; plain OpenAI has no top_k
        if n != 1:
            body["n"] = n
        body.update(self.extra_body)
        return body

    def _backoff(self, retry: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.backoff_max, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date; fall back to exponential backoff
        delay = min(self.backoff_max, self.backoff_base * (2**retry))
        return delay * random.uniform(0.5, 1.0)  # jitter: concurrent retries do not hit the server in step

    async def complete(self, messages: Messages, *, n: int, sampling: SamplingParams) -> Completion:
        body = self.payload(messages, n, sampling)
        retries = 0
        start = time.perf_counter()
        client_index = await self._slots.get()
        try:
            while True:
                problem, retry_after = await self._try_once(self._clients[client_index], body, n)
                if isinstance(problem, Completion):
                    problem.http_retries = retries
                    problem.seed = sampling.seed
                    problem.latency_s = time.perf_counter() - start
                    self._count_tokens(problem, messages)
                    return problem
                if isinstance(problem, RequestRejected):
                    problem.http_retries = retries
                    raise problem
                if retries >= self.max_http_retries:
                    raise EndpointUnavailable(
                        f"{self.url}: {problem} (gave up after {retries} retries); finished rows are saved — "
                        "rerun the same command to resume (raise --request-timeout or --http-retries if the "
                        "server is just slow)"
                    )
                await asyncio.sleep(self._backoff(retries, retry_after))
                retries += 1
        finally:
            self._slots.put_nowait(client_index)

    async def _try_once(
        self, client: Any, body: dict[str, Any], n: int
    ) -> tuple[Completion | RequestRejected | str, str | None]:
        """One POST: a Completion, a RequestRejected, or a string describing a transient failure."""
        httpx = self._httpx
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await client.post(self.url, json=body)
        except TimeoutError:
            return f"request timed out after {self.request_timeout:g}s", None
        except httpx.TimeoutException:
            return f"request timed out after {self.request_timeout:g}s", None
        except httpx.TransportError as err:
            return f"connection error: {type(err).__name__}: {err}", None
        if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
            return f"HTTP {response.status_code}: {_snippet(response.text)}", response.headers.get(
                "retry-after"
            )
        if response.status_code >= 400:
            return RequestRejected(f"HTTP {response.status_code}: {_snippet(response.text)}"), None
        try:
            data = response.json()
            choices = data["choices"]
            texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"HTTP {response.status_code} but not a chat completion: {_snippet(response.text)}", None
        if len(texts) != n:
            return f"asked for n={n} choices, got {len(texts)}", None
        usage = data.get("usage") or {}
        return (
            Completion(
                texts=texts,
                prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
                completion_tokens=_int_or_none(usage.get("completion_tokens")),
            ),
            None,
        )

    def _count_tokens(self, completion: Completion, messages: Messages) -> None:
        """Fill in token counts with the local tokenizer when the server reported no usage."""
        if self.tokenizer is None:
            return
        from corewarding.data.prompting import prompt_lengths

        if completion.prompt_tokens is None:
            completion.prompt_tokens = prompt_lengths(self.tokenizer, [messages])[0]
        if completion.completion_tokens is None:
            ids = self.tokenizer(completion.texts, add_special_tokens=False)["input_ids"]
            completion.completion_tokens = sum(len(x) for x in ids)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------ local models


@dataclass
class BatchItem:
    """One request as a runner sees it."""

    messages: Messages
    n: int
    sampling: SamplingParams


class BatchRunner(Protocol):
    """Generates for many requests in one blocking call (run in a worker thread)."""

    model_name: str

    def run(self, items: Sequence[BatchItem]) -> list[Completion]: ...


class BatchingBackend:
    """Turns concurrent single requests into batched runner calls, one at a time.

    The collector waits ``linger_s`` after the first pending request so that the row tasks released by
    the previous batch can all submit theirs; everything pending (up to ``max_batch``) then goes into one
    ``runner.run`` call. Requests with different ``n`` or sampling settings are allowed in one call; the
    runner groups them as it needs.
    """

    def __init__(self, runner: BatchRunner, *, max_batch: int = 64, linger_s: float = 0.02):
        self.runner = runner
        self.model_name = runner.model_name
        self.default_concurrency = max_batch
        self.max_batch = max(1, int(max_batch))
        self.linger_s = linger_s
        self._pending: list[tuple[BatchItem, asyncio.Future[Completion]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def complete(self, messages: Messages, *, n: int, sampling: SamplingParams) -> Completion:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._collector())
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._pending.append((BatchItem(messages, n, sampling), future))
        assert self._wake is not None
        self._wake.set()
        return await future

    async def _collector(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.linger_s)
            batch = [(item, fut) for item, fut in self._pending[: self.max_batch] if not fut.cancelled()]
            del self._pending[: self.max_batch]
            if not self._pending:
                self._wake.clear()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.runner.run, [item for item, _ in batch])
            except Exception as err:  # a broken model or OOM: fail every waiting row; the run stops
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            elapsed = time.perf_counter() - start
            for (_, fut), result in zip(batch, results, strict=True):
                result.latency_s = elapsed
                if not fut.done():
                    fut.set_result(result)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _group_key(item: BatchItem) -> tuple:
    s = item.sampling
    return (item.n, s.temperature, s.top_p, s.top_k, s.max_new_tokens)


class EngineRunner:
    """Runs batches through a ``RolloutEngine`` (``HFRolloutEngine``, ``VLLMRolloutEngine``).

    One ``generate`` call per group of requests with equal sampling settings. An engine takes one seed
    per call, not per request: ``HFRolloutEngine`` seeds the call with the seed of the group's first
    request (reported as ``Completion.seed``; retries still differ because their seeds do), while
    ``VLLMRolloutEngine`` samples from its run seed (``seeds_per_call=False``: no seed is reported).
    """

    def __init__(self, engine: Any, model_name: str, *, seeds_per_call: bool = True):
        self.engine = engine
        self.model_name = model_name
        self.seeds_per_call = seeds_per_call

    def run(self, items: Sequence[BatchItem]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(_group_key(item), []).append(i)
        for indices in groups.values():
            first = items[indices[0]]
            n = first.n
            rollouts = self.engine.generate([items[i].messages for i in indices], n, first.sampling)
            for pos, i in enumerate(indices):
                mine = rollouts[pos * n : (pos + 1) * n]
                results[i] = Completion(
                    texts=[r.text for r in mine],
                    prompt_tokens=len(mine[0].prompt_ids) if mine else 0,
                    completion_tokens=sum(len(r.response_ids) for r in mine),
                    seed=first.sampling.seed if self.seeds_per_call else None,
                )
        return [r for r in results if r is not None]


def with_seed(sampling: SamplingParams, seed: int) -> SamplingParams:
    """A copy of ``sampling`` with ``seed`` set."""
    return dataclasses.replace(sampling, seed=seed)


def parse_json_option(name: str, text: str | None) -> dict[str, Any] | None:
    """A JSON-object command-line option (``--extra-body``), or a ConfigError saying what is wrong."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{name}: expected a JSON object, got {text!r} ({err.msg})") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a JSON object, got {type(value).__name__} {text!r}")
    return value
