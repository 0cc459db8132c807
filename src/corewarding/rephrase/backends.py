"""Where rewrites (and answer-check solutions) come from: an HTTP endpoint or a local model.

All backends expose one coroutine, ``complete(messages, n=..., sampling=...) -> Completion``, so the
pipeline runs every row as its own task with bounded concurrency and never cares what answers it.

* :class:`OpenAIChatBackend` — any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, hosted
  APIs). Transient failures (connection errors, timeouts, 408/409/425/429/5xx, a 200 whose body is not a
  chat completion) are retried with exponential backoff, honouring ``Retry-After``, within a retry count
  *and* a wall-clock budget per request (``give_up_after``), so a server that never answers stops the run in
  minutes, not hours (:func:`give_up_bound`). When they persist the run stops with
  :class:`EndpointUnavailable`: a dead server must not turn every row into a "failed rewrite" (the rows
  done so far are saved; the same command resumes). Any other 4xx (wrong model name, missing key, a request
  the server cannot serve) will not go away by asking again, and would otherwise fail every row the same
  way: it stops the run at once with the server's message (:class:`RequestRefused`).
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

# Defaults of the HTTP backend (and of ``corewarding rephrase``). One try may take REQUEST_TIMEOUT_S: a 32B
# model writing ~1k tokens needs well under a minute even on a busy server, and 4k tokens at ~25 tokens/s
# still fit. A server that accepts connections and never answers costs at most GIVE_UP_AFTER_S per request
# (the budget cuts the second try short); one that refuses connections costs the backoff sum, ~15 s.
REQUEST_TIMEOUT_S = 180.0
CONNECT_TIMEOUT_S = 10.0
HTTP_RETRIES = 4
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
GIVE_UP_AFTER_S = 300.0


def give_up_bound(
    *,
    request_timeout: float = REQUEST_TIMEOUT_S,
    retries: int = HTTP_RETRIES,
    backoff: float = BACKOFF_S,
    backoff_max: float = BACKOFF_MAX_S,
    give_up_after: float = GIVE_UP_AFTER_S,
) -> float:
    """Worst-case seconds before one request gives up on a server that accepts and never answers.

    Every try waits its full timeout and every backoff its full (un-jittered) delay, but no try or wait
    runs past ``give_up_after`` from the first try, so the bound is the smaller of the two.
    """
    waits = sum(min(backoff_max, backoff * 2**k) for k in range(retries))
    return min(give_up_after, (retries + 1) * request_timeout + waits)


def _shard_sizes(total: int, per_shard: int) -> list[int]:
    """Split ``total`` connections into shards of at most ``per_shard`` (``_shard_sizes(20, 8)`` = 8, 8, 4)."""
    return [min(per_shard, total - start) for start in range(0, total, per_shard)]


class EndpointUnavailable(CorewardingError):
    """The backend kept failing transiently past the retry budget; the run stops (and can be resumed)."""


class RequestRefused(CorewardingError):
    """The server refused a request for good (a 3xx, or a 4xx other than 408/409/425/429): the run stops.

    Retrying cannot fix a wrong ``--model``, a missing key or a body the server will not accept, and
    recording it as a failed rewrite would quietly turn every row into its original question.
    """


@dataclass
class Completion:
    """``n`` replies to one request, the token usage when known, and how it was obtained."""

    texts: list[str | None]  # None: the server sent ``content: null`` (no text at all)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    http_retries: int = 0
    seed: int | None = None  # the seed the sampler actually used, when known (a batch shares one on HF)
    latency_s: float = 0.0
    finish_reasons: list[str | None] = dataclasses.field(default_factory=list)  # HTTP only


class Backend(Protocol):
    """Something that answers chat requests; see the module docstring."""

    model_name: str
    default_concurrency: int

    async def complete(self, messages: Messages, *, n: int, sampling: SamplingParams) -> Completion: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------- HTTP


class OpenAIChatBackend:
    """POSTs ``{api_base}/chat/completions`` with httpx; at most ``concurrency`` requests in flight.

    ``request_timeout`` bounds one try as a whole (connect to last byte), ``connect_timeout`` the connection
    alone, so a refused or unreachable server is noticed in seconds. A timeout counts as a transient
    failure; a request stops retrying after ``max_http_retries`` retries or ``give_up_after`` seconds,
    whichever comes first. ``tokenizer`` (optional) counts tokens when the server's reply has no ``usage``.
    ``api_key_env`` only names the key's variable in error messages.
    """

    default_concurrency = 8

    def __init__(
        self,
        api_base: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        request_timeout: float = REQUEST_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_http_retries: int = HTTP_RETRIES,
        backoff_base: float = BACKOFF_S,
        backoff_max: float = BACKOFF_MAX_S,
        give_up_after: float = GIVE_UP_AFTER_S,
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
        self.connect_timeout = min(float(connect_timeout), self.request_timeout)
        self.max_http_retries = int(max_http_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.give_up_after = float(give_up_after)
        self.extra_body = dict(extra_body or {})
        self.tokenizer = tokenizer
        self.api_key_env = api_key_env
        self._sent_key = bool(api_key)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # httpcore's pool does O(connections) bookkeeping per request event, so one pool of hundreds of
        # connections burns more client CPU than a big server's throughput allows. The concurrency is
        # split into slots over small clients instead; taking a slot also bounds requests in flight.
        self._clients = [
            httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
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
        outcome: Completion | str = "no try fitted in --give-up-after"
        client_index = await self._slots.get()
        start = time.perf_counter()
        deadline = start + self.give_up_after
        try:
            while True:
                budget = min(self.request_timeout, deadline - time.perf_counter())
                if budget <= 0:  # the backoff overslept the deadline: no time left for a try
                    raise self._gave_up(outcome, retries, start)
                outcome, retry_after = await self._try_once(self._clients[client_index], body, n, budget)
                if isinstance(outcome, Completion):
                    outcome.http_retries = retries
                    outcome.seed = sampling.seed
                    outcome.latency_s = time.perf_counter() - start
                    self._count_tokens(outcome, messages)
                    return outcome
                delay = self._backoff(retries, retry_after)
                spent = time.perf_counter() - start
                if retries >= self.max_http_retries or spent + delay >= self.give_up_after:
                    raise self._gave_up(outcome, retries, start)
                await asyncio.sleep(delay)
                retries += 1
        finally:
            self._slots.put_nowait(client_index)

    def _gave_up(self, problem: Completion | str, retries: int, start: float) -> EndpointUnavailable:
        spent = time.perf_counter() - start
        return EndpointUnavailable(
            f"{self.url}: {problem} (gave up after {retries} retries in {spent:.1f}s; limits: --http-retries "
            f"{self.max_http_retries}, --give-up-after {_secs(self.give_up_after)}s, --request-timeout "
            f"{_secs(self.request_timeout)}s)"
        )

    async def _try_once(
        self, client: Any, body: dict[str, Any], n: int, budget: float
    ) -> tuple[Completion | str, str | None]:
        """One POST of at most ``budget`` seconds: a Completion, or a string describing a transient failure.

        A refusal that retrying cannot fix raises :class:`RequestRefused`.
        """
        httpx = self._httpx
        try:
            async with asyncio.timeout(budget):
                response = await client.post(self.url, json=body)
        except (TimeoutError, httpx.TimeoutException) as err:
            phase = "connecting" if isinstance(err, httpx.ConnectTimeout) else "waiting for a reply"
            limit = self.connect_timeout if isinstance(err, httpx.ConnectTimeout) else budget
            return f"request timed out after {_secs(limit)}s {phase}", None
        except httpx.TransportError as err:
            return f"connection error: {type(err).__name__}: {err}", None
        code = response.status_code
        if code in RETRYABLE_STATUS or code >= 500:
            return f"HTTP {code}: {_snippet(response.text)}", response.headers.get("retry-after")
        if code >= 300:
            raise RequestRefused(self._refusal(code, response))
        try:
            data = response.json()
            choices = data["choices"]
            texts = [_content((c.get("message") or {}).get("content")) for c in choices]
            finish_reasons = [c.get("finish_reason") for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"HTTP {code} but not a chat completion: {_snippet(response.text)}", None
        if len(texts) != n:
            return f"asked for n={n} choices, got {len(texts)}", None
        usage = data.get("usage") or {}
        return (
            Completion(
                texts=texts,
                prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
                completion_tokens=_int_or_none(usage.get("completion_tokens")),
                finish_reasons=[r if isinstance(r, str) else None for r in finish_reasons],
            ),
            None,
        )

    def _refusal(self, code: int, response: Any) -> str:
        """One line: who refused what, the server's words, and which option most likely fixes it."""
        message = f"{self.url} rejected the request: HTTP {code}: {_snippet(response.text) or '(empty body)'}"
        if code in (401, 403):
            env = f"${self.api_key_env}" if self.api_key_env else "the --api-key-env variable"
            hint = (
                f"the API key from {env} was refused"
                if self._sent_key
                else f"no API key was sent ({env} is not set)"
            )
        elif code == 404:
            hint = f"check --model ({self.model_name!r}) and --api-base"
        elif code < 400:
            hint = f"redirected to {response.headers.get('location')!r}; use that address as --api-base"
        else:
            hint = "check --model, --max-tokens and --extra-body against what the server accepts"
        return f"{message} ({hint})"

    def _count_tokens(self, completion: Completion, messages: Messages) -> None:
        """Fill in token counts with the local tokenizer when the server reported no usage."""
        if self.tokenizer is None:
            return
        from corewarding.data.prompting import prompt_lengths

        if completion.prompt_tokens is None:
            completion.prompt_tokens = prompt_lengths(self.tokenizer, [messages])[0]
        if completion.completion_tokens is None:
            texts = [t or "" for t in completion.texts]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            completion.completion_tokens = sum(len(x) for x in ids)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _secs(seconds: float) -> str:
    return f"{round(seconds, 1):g}"


def _content(value: Any) -> str | None:
    """A choice's ``message.content``: text, None for ``null``, text parts joined; anything else is invalid."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(p["text"] for p in value if isinstance(p.get("text"), str))
    raise TypeError(f"content of type {type(value).__name__}")


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
