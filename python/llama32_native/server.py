"""OpenAI-compatible HTTP server: a scheduler thread decodes every request together (continuous batching).

Contract: one thread owns the Model; each request holds a session slot and per step contributes one
token to a single batched forward. Bad input gets a 4xx with an OpenAI-style error body (never a 5xx);
a full queue gets 429 with Retry-After; a client that disconnects frees its slot within one step.
Binds 127.0.0.1 by default; with an API key every route but /health and the static page needs it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Union

import numpy as np

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the server needs FastAPI and uvicorn ({e.name} is missing): pip install 'llama32-native[server]'"
    ) from e

from .batch import _prefill
from .chat import validate_messages
from .errors import Error
from .sampling import Sampler, SamplingParams
from .streaming import TextStream

log = logging.getLogger("llama32_native.server")

__all__ = ["ServerConfig", "Scheduler", "Job", "QueueFullError", "ShuttingDownError", "create_app", "serve",
           "start_in_thread"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


# ====================================================================== configuration
@dataclasses.dataclass
class ServerConfig:
    """Limits and policy of one server (the CLI's `serve` options map onto these)."""

    model_name: str = "llama32-native"
    api_key: str | None = None
    max_queue: int = 64  # requests waiting for a slot; beyond this: 429
    max_tokens: int = 4096  # largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when a chat request gives none (completions default to 16, as OpenAI)
    max_prompt_tokens: int | None = None  # None: the context length
    max_body_bytes: int = 1 << 20
    max_n: int = 4  # choices per request
    max_prompts: int = 16  # prompts in one /v1/completions list or /score input_string
    body_timeout_s: float = 30.0  # a body that trickles in slower than this gets 408
    retry_after_s: int = 1
    allowed_hosts: tuple[str, ...] | None = None  # Host header names; None: local names when bound locally
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_tokens", "default_max_tokens", "max_body_bytes", "max_n", "max_prompts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ServerConfig.{name} must be a positive integer, got {v!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"ServerConfig.max_prompt_tokens must be positive, got {self.max_prompt_tokens}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("ServerConfig.api_key must not be empty")


class QueueFullError(Exception):
    """The scheduler's wait queue is full (HTTP 429)."""


class ShuttingDownError(Exception):
    """The scheduler is stopping or dead (HTTP 503)."""


# ====================================================================== scheduler
Event = tuple  # ("text", index, str) | ("done", index, finish_reason, n_prompt, n_completion) | ("error", index, msg)


@dataclasses.dataclass(eq=False)
class Job:
    """One sequence to generate: its prompt ids, sampling, and where its events go (thread-safe sink)."""

    ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    sink: Callable[[Event], None]
    index: int = 0
    prompt_index: int = 0
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    # scheduler-side state
    session: Any = None
    sampler: Any = None
    stream: Any = None
    history: list[int] = dataclasses.field(default_factory=list)
    n_generated: int = 0
    logits: np.ndarray | None = None
    next_token: int | None = None

    def cancel(self) -> None:
        self.cancelled.set()


@dataclasses.dataclass
class SchedulerStats:
    forward_calls: int = 0
    prefill_calls: int = 0
    decode_steps: int = 0
    tokens_generated: int = 0
    requests_done: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    max_batch: int = 0
    max_queue_depth: int = 0


class _CountingForward:
    """Stands in for the model in batch._prefill: counts every batched forward."""

    def __init__(self, model: Any, stats: SchedulerStats):
        self._model, self._stats = model, stats

    def _forward(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, rows: np.ndarray) -> np.ndarray:
        self._stats.forward_calls += 1
        return self._model._forward(tokens, pos, seq, rows)


class Scheduler:
    """Owns the model; admits queued jobs into free session slots and decodes all active ones per step."""

    def __init__(self, model: Any, max_queue: int = 64, max_batch: int | None = None):
        self.model = model
        self.capacity = len(model._free_slots) if max_batch is None else min(max_batch, len(model._free_slots))
        if self.capacity < 1:
            raise ValueError("the model has no free session slot: load it with max_sequences >= 2")
        self.max_queue = max_queue
        self.stats = SchedulerStats()
        self._fwd = _CountingForward(model, self.stats)
        self._cv = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._stopping = False
        self._dead: str | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llama32-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every queued and active job, then join the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self._dead is None and self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def submit(self, jobs: Iterable[Job]) -> None:
        """Queue jobs together (all or none); QueueFullError when they do not fit, ShuttingDownError if stopping."""
        jobs = list(jobs)
        with self._cv:
            if self._stopping or self._dead is not None:
                raise ShuttingDownError(self._dead or "the server is shutting down")
            if len(self._pending) + len(jobs) > self.max_queue:
                raise QueueFullError(f"the request queue is full ({self.max_queue} waiting)")
            self._pending.extend(jobs)
            self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(self._pending))
            self._cv.notify_all()

    # -------------------------------------------------------------- the loop
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stopping and not self._pending and not self._active:
                        self._cv.wait()
                    if self._stopping:
                        break
                    new = self._take_pending()
                self._drop_cancelled()
                if new:
                    self._start_jobs(new)
                self._sample_step()
                self._decode_step()
        except BaseException as e:  # a bug or a dead engine: say so on /health, fail every request
            self._dead = f"the scheduler stopped: {type(e).__name__}: {e}"
            log.exception("scheduler thread died")
        finally:
            with self._cv:
                self._stopping = True
                doomed = list(self._pending) + self._active
                self._pending.clear()
                self._active = []
            for job in doomed:
                self._fail(job, self._dead or "the server is shutting down")

    def _take_pending(self) -> list[Job]:
        new = []
        while self._pending and len(self._active) + len(new) < self.capacity:
            job = self._pending.popleft()
            if job.cancelled.is_set():
                self.stats.requests_cancelled += 1
                continue
            new.append(job)
        return new

    def _drop_cancelled(self) -> None:
        keep = []
        for job in self._active:
            if job.cancelled.is_set():
                self._release(job)
                self.stats.requests_cancelled += 1
            else:
                keep.append(job)
        self._active = keep

    def _start_jobs(self, new: list[Job]) -> None:
        """Give each new job a slot and prefill all their prompts together."""
        started = []
        try:
            for job in new:
                job.session = self.model.session()
                job.sampler = Sampler(job.params, self.model.config.n_vocab)
                job.stream = TextStream(self.model.tokenizer, list(job.params.stop_strings))
                job.history = list(job.ids)
                started.append(job)
            self.stats.prefill_calls += 1
            last = _prefill(self._fwd, [j.session for j in started], [j.ids for j in started])
        except Error as e:
            for job in new:
                self._fail(job, str(e))
            return
        for job, logits in zip(started, last):
            job.logits = logits
            self._active.append(job)

    def _sample_step(self) -> None:
        keep = []
        for job in self._active:
            try:
                finish = self._sample_one(job)
            except Exception as e:  # NumericalError on non-finite logits: that request only
                self._fail(job, str(e))
                continue
            if finish is None:
                keep.append(job)
            else:
                self._finish(job, finish)
        self._active = keep

    def _sample_one(self, job: Job) -> str | None:
        """Pick one token for a job; its finish reason, or None to go on."""
        tok = job.sampler.sample(job.logits, job.history)
        job.logits = None
        if tok in job.stop_ids:
            return "stop"
        job.history.append(tok)
        job.n_generated += 1
        self.stats.tokens_generated += 1
        text = job.stream.push(tok)
        if text:
            self._emit(job, ("text", job.index, text))
        if job.stream.stopped:
            return "stop"
        if job.n_generated >= job.params.max_new_tokens:
            return "length"
        job.next_token = tok
        return None

    def _decode_step(self) -> None:
        """One batched forward: the last sampled token of every active job."""
        jobs = self._active
        if not jobs:
            return
        toks = np.asarray([j.next_token for j in jobs], np.int32)
        pos = np.asarray([j.session.n_past for j in jobs], np.int32)
        seq = np.asarray([j.session._slot for j in jobs], np.int32)
        self.stats.decode_steps += 1
        self.stats.max_batch = max(self.stats.max_batch, len(jobs))
        out = self._fwd._forward(toks, pos, seq, np.arange(len(jobs), dtype=np.int32))
        for k, job in enumerate(jobs):
            job.session._tokens.append(int(toks[k]))
            job.logits = out[k]

    # -------------------------------------------------------------- endings
    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.sink(event)
        except Exception:  # the client's event loop is gone
            job.cancel()

    def _release(self, job: Job) -> None:
        if job.session is not None:
            job.session.close()
            job.session = None

    def _finish(self, job: Job, reason: str) -> None:
        rest = job.stream.finish()
        if rest:
            self._emit(job, ("text", job.index, rest))
        self._release(job)
        self.stats.requests_done += 1
        self._emit(job, ("done", job.index, reason, len(job.ids), job.n_generated))

    def _fail(self, job: Job, message: str) -> None:
        self._release(job)
        self.stats.requests_failed += 1
        self._emit(job, ("error", job.index, message))


# ====================================================================== request schemas
class _Lenient(BaseModel):
    """Strict types, unknown fields ignored (clients send fields this server does not use).

    Field annotations use Optional/Union: pydantic evaluates them at run time (Python 3.9 has no `X | Y`).
    """

    model_config = ConfigDict(strict=True, extra="ignore")


class _SamplingFields(_Lenient):
    model: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    n: int = 1
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    user: Optional[str] = None


class CompletionRequest(_SamplingFields):
    prompt: Union[str, list[str], list[int]]
    logprobs: Optional[int] = None
    echo: bool = False
    best_of: Optional[int] = None
    suffix: Optional[str] = None


class ChatRequest(_SamplingFields):
    messages: list[dict[str, Any]]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[list[Any]] = None
    response_format: Optional[dict[str, Any]] = None


class ScoreParameters(_Lenient):
    top_p: Optional[float] = None
    temperature: Optional[float] = None
    max_new_tokens: Optional[int] = None
    do_sample: Optional[bool] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None


class ScoreInput(_Lenient):
    input_string: list[str] = Field(min_length=1)
    parameters: ScoreParameters = Field(default_factory=ScoreParameters)


class ScoreRequest(_Lenient):
    input_data: ScoreInput


class BadRequest(Exception):
    """A request the server understood but will not serve (HTTP 400 unless status says otherwise)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


# ====================================================================== the app
def _error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
                code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, headers: dict[str, str] | None = None, **kw: Any) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(_error_body(message, kind, **kw), status_code=status, headers=headers)


class _Service:
    """Turns validated requests into jobs, and job events into OpenAI responses."""

    def __init__(self, model: Any, scheduler: Scheduler, config: ServerConfig):
        self.model, self.scheduler, self.config = model, scheduler, config
        self.n_ctx = model.context_length
        self.stop_ids = model._stop_ids()
        fmt = model.chat_format if model.tokenizer is not None else None
        self.chat_format = fmt
        self.chat_stop_ids = self.stop_ids | (fmt.stop_tokens if fmt is not None else frozenset())

    # -------------------------------------------------------------- validation
    def sampling(self, req: _SamplingFields, max_tokens: int | None, default_max: int, n_prompt: int,
                 extra: dict[str, Any] | None = None) -> SamplingParams:
        cfg = self.config
        limit = cfg.max_prompt_tokens or self.n_ctx
        if n_prompt > limit:
            raise BadRequest(f"the prompt has {n_prompt} tokens, more than the limit of {limit}",
                             "messages" if isinstance(req, ChatRequest) else "prompt", "context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max, cfg.max_tokens, self.n_ctx - n_prompt)
            if max_tokens < 1:
                raise BadRequest(f"the prompt of {n_prompt} tokens fills the context of {self.n_ctx}",
                                 "prompt", "context_length_exceeded")
        if max_tokens < 1 or max_tokens > cfg.max_tokens:
            raise BadRequest(f"max_tokens must be in [1, {cfg.max_tokens}], got {max_tokens}", "max_tokens")
        if n_prompt + max_tokens > self.n_ctx:
            raise BadRequest(f"the prompt of {n_prompt} tokens + max_tokens={max_tokens} exceeds the context of "
                             f"{self.n_ctx}", "max_tokens", "context_length_exceeded")
        kw: dict[str, Any] = {"max_new_tokens": max_tokens}
        fields = {"temperature": 1.0, "top_p": 1.0, "top_k": None, "min_p": None, "repetition_penalty": None,
                  "seed": None, "stop": None}
        for name, default in fields.items():
            v = getattr(req, name, None)
            if v is None:
                v = default
            if v is not None:
                kw[name] = v
        kw.update(extra or {})
        try:
            return SamplingParams(**kw)
        except (TypeError, ValueError) as e:
            m = re.match(r"[a-z_]+", str(e))
            raise BadRequest(str(e), m.group(0) if m else None) from None

    def check_common(self, req: _SamplingFields) -> None:
        if not 1 <= req.n <= self.config.max_n:
            raise BadRequest(f"n must be in [1, {self.config.max_n}], got {req.n}", "n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(req, name) not in (None, 0, 0.0):
                raise BadRequest(f"{name} is not supported (use repetition_penalty)", name)

    def tokenize(self, text: str) -> list[int]:
        tok = self.model.tokenizer
        if tok is None:
            raise BadRequest("this model has no tokenizer: send token ids", "prompt")
        try:
            return tok.encode(text, bos=True)
        except (TypeError, ValueError, UnicodeError) as e:
            raise BadRequest(f"cannot encode the prompt: {e}", "prompt") from None

    def prompt_ids(self, prompt: str | list[str] | list[int]) -> list[list[int]]:
        if isinstance(prompt, str):
            return [self.tokenize(prompt)]
        if not prompt:
            raise BadRequest("prompt must not be empty", "prompt")
        if all(isinstance(p, int) for p in prompt):
            n_vocab = self.model.config.n_vocab
            bad = [t for t in prompt if not 0 <= t < n_vocab]
            if bad:
                raise BadRequest(f"token id {bad[0]} is out of range [0, {n_vocab})", "prompt")
            return [list(prompt)]
        if len(prompt) > self.config.max_prompts:
            raise BadRequest(f"at most {self.config.max_prompts} prompts per request, got {len(prompt)}", "prompt")
        return [self.tokenize(p) for p in prompt]

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        if self.chat_format is None:
            raise BadRequest("this model has no chat format: use /v1/completions", "messages")
        msgs = []
        for i, m in enumerate(messages):
            m = dict(m)
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts: only text is supported
                texts = []
                for part in content:
                    is_text = isinstance(part, dict) and part.get("type") == "text"
                    if not is_text or not isinstance(part.get("text"), str):
                        raise BadRequest(f"messages[{i}].content: only text parts are supported", "messages")
                    texts.append(part["text"])
                m["content"] = "".join(texts)
            elif content is None and m.get("role") == "assistant":
                m["content"] = ""
            msgs.append(m)
        try:
            validate_messages(msgs)
            return self.chat_format.encode(msgs, add_generation_prompt=True)
        except (TypeError, ValueError, UnicodeError) as e:
            raise BadRequest(str(e), "messages") from None

    # -------------------------------------------------------------- running jobs
    def submit(self, prompts: list[list[int]], params: SamplingParams, n: int, stop_ids: frozenset[int]
               ) -> tuple[asyncio.Queue, list[Job]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        jobs = []
        for p, ids in enumerate(prompts):
            for i in range(n):
                k = p * n + i
                jp = params if params.seed is None or k == 0 else dataclasses.replace(
                    params, seed=(params.seed + k) % (1 << 64))
                jobs.append(Job(ids=ids, params=jp, stop_ids=stop_ids, sink=sink, index=k, prompt_index=p))
        try:
            self.scheduler.submit(jobs)
        except QueueFullError as e:
            raise BadRequest(str(e), code="queue_full", status=429) from None
        except ShuttingDownError as e:
            raise BadRequest(str(e), code="unavailable", status=503) from None
        return queue, jobs

    @staticmethod
    async def collect(queue: asyncio.Queue, jobs: list[Job], request: Request) -> list[dict[str, Any]]:
        """Wait for every job; [{"text", "finish_reason", "prompt_tokens", "completion_tokens"}] by index."""
        out = [{"text": [], "finish_reason": None, "prompt_tokens": len(j.ids), "completion_tokens": 0,
                "prompt_index": j.prompt_index} for j in jobs]
        left = len(jobs)
        try:
            while left:
                try:
                    ev = await asyncio.wait_for(queue.get(), 0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise asyncio.CancelledError() from None
                    continue
                kind, idx = ev[0], ev[1]
                if kind == "text":
                    out[idx]["text"].append(ev[2])
                elif kind == "done":
                    out[idx]["finish_reason"], out[idx]["completion_tokens"] = ev[2], ev[4]
                    left -= 1
                else:
                    raise BadRequest(ev[2], code="generation_failed", status=500)
        finally:
            for j in jobs:
                j.cancel()  # a no-op for finished jobs; frees the slots of the rest
        for o in out:
            o["text"] = "".join(o["text"])
        return out


def _usage(results: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum({r["prompt_index"]: r["prompt_tokens"] for r in results}.values())  # n choices share a prompt
    completion = sum(r["completion_tokens"] for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Guard:
    """ASGI middleware: Host and Origin checks (DNS rebinding, foreign pages), API key, body size and pace."""

    def __init__(self, app: Any, config: ServerConfig, allowed_hosts: tuple[str, ...] | None):
        self.app, self.config, self.allowed_hosts = app, config, allowed_hosts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            await _send_error(send, 403, f"host {host!r} is not allowed")
            return
        origin = headers.get("origin")
        cors = origin is not None and origin in self.config.cors_origins
        if origin is not None and not cors and origin.split("://", 1)[-1] != host:
            await _send_error(send, 403, f"cross-origin requests from {origin!r} are not allowed")
            return
        if cors and scope["method"] == "OPTIONS":
            await _send_raw(send, 204, b"", _cors_headers(origin))
            return
        needs_key = self.config.api_key is not None and scope["path"] not in ("/health", "/")
        if needs_key and not _key_ok(headers.get("authorization", ""), self.config.api_key):
            await _send_error(send, 401, "invalid or missing API key (Authorization: Bearer KEY)",
                              {"www-authenticate": "Bearer"}, code="invalid_api_key")
            return
        body = await self._read_body(headers, receive, send)
        if body is None:
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if cors:
            send = _with_headers(send, _cors_headers(origin))
        await self.app(scope, replay, send)

    async def _read_body(self, headers: dict[str, str], receive: Callable, send: Callable) -> bytes | None:
        limit = self.config.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "invalid Content-Length")
                return None
            if int(length) > limit:
                await _send_error(send, 413, f"the body of {length} bytes exceeds the limit of {limit}")
                return None
        chunks, total = [], 0
        deadline = time.monotonic() + self.config.body_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await _send_error(send, 408, "the request body arrived too slowly")
                return None
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _send_error(send, 413, f"the body exceeds the limit of {limit} bytes")
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _key_ok(auth: str, key: str) -> bool:
    scheme, _, token = auth.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _cors_headers(origin: str) -> dict[str, str]:
    return {"access-control-allow-origin": origin, "access-control-allow-headers": "authorization, content-type",
            "access-control-allow-methods": "GET, POST, OPTIONS", "vary": "Origin"}


def _with_headers(send: Callable, extra: dict[str, str]) -> Callable:
    async def wrapped(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            msg = dict(msg)
            msg["headers"] = list(msg.get("headers", [])) + [(k.encode(), v.encode()) for k, v in extra.items()]
        await send(msg)

    return wrapped


async def _send_raw(send: Callable, status: int, body: bytes, headers: dict[str, str]) -> None:
    hdrs = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Callable, status: int, message: str, headers: dict[str, str] | None = None,
                      code: str | None = None) -> None:
    body = json.dumps(_error_body(message, code=code)).encode()
    await _send_raw(send, status, body, {"content-type": "application/json", "connection": "close",
                                         **(headers or {})})


def _default_hosts(host: str) -> tuple[str, ...] | None:
    if host in LOCAL_HOSTS:
        return LOCAL_HOSTS
    return None  # bound to a public address: the operator decides (ServerConfig.allowed_hosts)


def create_app(model: Any, config: ServerConfig | None = None, scheduler: Scheduler | None = None,
               bind_host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI app serving `model`; starts (and on shutdown stops) a Scheduler that owns the model."""
    config = config or ServerConfig()
    scheduler = scheduler or Scheduler(model, max_queue=config.max_queue)
    service = _Service(model, scheduler, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model.tokenizer is not None:  # build the tokenizer's caches before the first request
            await run_in_threadpool(model.tokenizer.decode, model.tokenizer.encode("warm up", bos=True))
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)

    app = FastAPI(title="llama32-native", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.config = config
    _install_handlers(app)
    _install_routes(app, service)
    allowed = config.allowed_hosts if config.allowed_hosts is not None else _default_hosts(bind_host)
    app.add_middleware(_Guard, config=config, allowed_hosts=allowed)
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            return _error(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}"[:500])
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{loc}: {first.get('msg', 'invalid request')}" if loc else first.get("msg", "invalid request")
        return _error(422, msg[:500], param=loc or None)

    @app.exception_handler(BadRequest)
    async def on_bad(request: Request, exc: BadRequest) -> JSONResponse:
        headers = {"retry-after": str(app.state.config.retry_after_s)} if exc.status in (429, 503) else None
        return _error(exc.status, str(exc), headers, param=exc.param, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def _install_routes(app: FastAPI, svc: _Service) -> None:
    cfg = svc.config
    created = int(time.time())

    @app.get("/health")
    async def health() -> JSONResponse:
        s = svc.scheduler
        body = {"status": "ok" if s.healthy else "unhealthy", "active": s.active_count, "queued": s.queue_depth}
        if s._dead:
            body["error"] = s._dead
        return JSONResponse(body, status_code=200 if s.healthy else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": created,
                                            "owned_by": "llama32-native"}]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        with open(os.path.join(STATIC_DIR, "chat.html"), encoding="utf-8") as f:
            html = f.read()
        return HTMLResponse(html, headers={"x-content-type-options": "nosniff",
                                           "content-security-policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'self' 'unsafe-inline'"})

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        svc.check_common(req)
        if req.logprobs or req.echo or (req.best_of or 1) > 1 or req.suffix:
            raise BadRequest("logprobs, echo, best_of and suffix are not supported", "logprobs")
        prompts = await run_in_threadpool(svc.prompt_ids, req.prompt)
        params = None
        for ids in prompts:
            params = svc.sampling(req, req.max_tokens, 16, len(ids))
        queue, jobs = svc.submit(prompts, params, req.n, svc.stop_ids)
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": now, "model": cfg.model_name}
        if req.stream:
            return _stream(queue, jobs, req, lambda i, text, fin: {
                **base, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": fin}]}, None)
        results = await svc.collect(queue, jobs, request)
        choices = [{"index": i, "text": r["text"], "logprobs": None, "finish_reason": r["finish_reason"]}
                   for i, r in enumerate(results)]
        return {**base, "choices": choices, "usage": _usage(results)}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Any:
        svc.check_common(req)
        if req.logprobs or req.top_logprobs or req.tools or (
                req.response_format and req.response_format.get("type") not in (None, "text")):
            raise BadRequest("logprobs, tools and response_format are not supported", "logprobs")
        ids = await run_in_threadpool(svc.chat_ids, req.messages)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = svc.sampling(req, max_tokens, cfg.default_max_tokens, len(ids))
        queue, jobs = svc.submit([ids], params, req.n, svc.chat_stop_ids)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "chat.completion.chunk" if req.stream else "chat.completion", "created": now,
                "model": cfg.model_name}
        if req.stream:
            def chunk(i: int, text: str | None, fin: str | None) -> dict[str, Any]:
                delta = {} if text is None else {"content": text}
                return {**base, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": fin}]}

            first = [{**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]} for i in range(req.n)]
            return _stream(queue, jobs, req, chunk, first)
        results = await svc.collect(queue, jobs, request)
        choices = [{"index": i, "message": {"role": "assistant", "content": r["text"]}, "logprobs": None,
                    "finish_reason": r["finish_reason"]} for i, r in enumerate(results)]
        return {**base, "choices": choices, "usage": _usage(results)}

    @app.post("/score")
    async def score(req: ScoreRequest, request: Request) -> Any:
        inp = req.input_data
        if len(inp.input_string) > cfg.max_prompts:
            raise BadRequest(f"at most {cfg.max_prompts} input strings, got {len(inp.input_string)}",
                             "input_string")
        prompts = await run_in_threadpool(lambda: [svc.tokenize(s) for s in inp.input_string])
        p = inp.parameters
        extra = {k: v for k, v in p.model_dump().items()
                 if v is not None and k in ("do_sample", "top_k", "min_p", "repetition_penalty")}
        fields = _SamplingFields(temperature=p.temperature, top_p=p.top_p, seed=p.seed, stop=p.stop)
        params = None
        for ids in prompts:
            params = svc.sampling(fields, p.max_new_tokens, cfg.default_max_tokens, len(ids), extra)
        queue, jobs = svc.submit(prompts, params, 1, svc.stop_ids)
        results = await svc.collect(queue, jobs, request)
        return [{"0": r["text"]} for r in results]


def _stream(queue: asyncio.Queue, jobs: list[Job], req: _SamplingFields,
            chunk: Callable[[int, str | None, str | None], dict[str, Any]],
            first: list[dict[str, Any]] | None) -> StreamingResponse:
    include_usage = bool((req.stream_options or {}).get("include_usage"))

    async def events() -> AsyncIterator[str]:
        results = [{"prompt_tokens": len(j.ids), "completion_tokens": 0, "prompt_index": j.prompt_index}
                   for j in jobs]
        left = len(jobs)
        try:
            for c in first or ():
                yield _sse(c)
            while left:
                ev = await queue.get()
                if ev[0] == "text":
                    yield _sse(chunk(ev[1], ev[2], None))
                elif ev[0] == "done":
                    results[ev[1]]["completion_tokens"] = ev[4]
                    left -= 1
                    yield _sse(chunk(ev[1], None if first else "", ev[2]))
                else:
                    left -= 1
                    yield _sse(_error_body(ev[2], "server_error", code="generation_failed"))
                    break
            if include_usage:
                last = chunk(0, None, None)
                last["choices"] = []
                last["usage"] = _usage(results)
                yield _sse(last)
            yield "data: [DONE]\n\n"
        finally:  # the client left, or the stream ended: free the slots of unfinished jobs
            for j in jobs:
                j.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


# ====================================================================== running
def _uvicorn_config(app: FastAPI, host: str, port: int, log_level: str, graceful_s: float) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s,
                          timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024, server_header=False)


def serve(model: Any, host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None,
          log_level: str = "info", graceful_s: float = 30.0) -> None:
    """Serve until SIGINT/SIGTERM: stop accepting, let in-flight requests finish (up to graceful_s), stop."""
    app = create_app(model, config, bind_host=host)
    _graceful_server_class()(_uvicorn_config(app, host, port, log_level, graceful_s)).run()


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """The first SIGINT/SIGTERM drains and returns normally (exit 0); a second one forces the exit."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    return GracefulServer


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    timeout: float = 30.0) -> tuple[Any, threading.Thread, int]:
    """Run an app in a background thread (tests, benchmarks); returns (uvicorn.Server, thread, port).

    Stop it with `server.should_exit = True; thread.join()`.
    """
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level, 5.0))
    thread = threading.Thread(target=server.run, name="llama32-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    return server, thread, port
