"""The FastAPI app: OpenAI routes (/v1/completions, /v1/chat/completions, /v1/models), /score, /health, the chat
page, and Server-Sent Events for streamed choices.

Contract: every response is OpenAI's shape; every error is OpenAI's JSON body with its real status, whatever
raised it (bad input is a 4xx, never a 5xx); the app owns a Scheduler that it starts and stops with its
lifespan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the server needs FastAPI and uvicorn ({e.name} is missing): pip install 'llama32_native[server]'"
    ) from e

from ..constrained import warm_grammar_tokenizers
from ..errors import Error
from ..tools import ToolStream
from .config import ServerConfig
from .errors import ApiError, error_body
from .guard import Guard, default_hosts
from .responses import chat_choice, chat_chunk, completion_choice, completion_chunk
from .scheduler import DoneEvent, Job, Scheduler, TextEvent
from .schemas import ChatRequest, CompletionRequest, SamplingFields, ScoreRequest
from .service import Service, usage

log = logging.getLogger("llama32_native.server")

__all__ = ["create_app"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def _error(status: int, message: str, headers: dict[str, str] | None = None, **kw: Any) -> JSONResponse:
    return JSONResponse(error_body(message, status=status, **kw), status_code=status, headers=headers)


def create_app(model: Any, config: ServerConfig | None = None, scheduler: Scheduler | None = None,
               bind_host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI app serving `model`; starts (and on shutdown stops) a Scheduler that owns the model."""
    config = config or ServerConfig()
    scheduler = scheduler or Scheduler(model, max_queue=config.max_queue)
    service = Service(model, scheduler, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model.tokenizer is not None:  # build the tokenizer's caches before the first request
            await run_in_threadpool(model.tokenizer.decode, model.tokenizer.encode("warm up", bos=True))
            # llguidance's view of the vocabulary takes ~1-2 s for 128k tokens: built in the background, so the
            # first constrained request does not stall the event loop for it
            threading.Thread(target=warm_grammar_tokenizers, args=(model,), daemon=True).start()
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
    allowed = config.allowed_hosts if config.allowed_hosts is not None else default_hosts(bind_host)
    app.add_middleware(Guard, config=config, allowed_hosts=allowed)
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

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"retry-after": str(app.state.config.retry_after_s)} if exc.status in (429, 503) else None
        return _error(exc.status, str(exc), headers, param=exc.param, code=exc.code)

    @app.exception_handler(Error)
    async def on_library_error(request: Request, exc: Error) -> JSONResponse:
        return _error(400, str(exc)[:2000])  # the package raised it on input it refused

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _wait_disconnect(request: Request) -> None:
    """Completes when the client closes the connection (the body was already read and replayed)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


async def _collect(service: Service, queue: asyncio.Queue, jobs: list[Job], request: Request) -> list[dict[str, Any]]:
    disconnected = asyncio.ensure_future(_wait_disconnect(request))
    try:
        return await service.collect(queue, jobs, disconnected)
    finally:
        disconnected.cancel()


def _install_routes(app: FastAPI, svc: Service) -> None:
    cfg = svc.config
    created = int(time.time())
    with open(os.path.join(STATIC_DIR, "chat.html"), encoding="utf-8") as f:  # read once, not in the event loop
        chat_page = f.read()

    @app.get("/health")
    async def health() -> JSONResponse:
        s = svc.scheduler
        body: dict[str, Any] = {"status": "ok" if s.healthy else "unhealthy", "active": s.active_count,
                                "queued": s.queue_depth}
        if cfg.speculative is not None:
            body["speculative"] = {"drafts_proposed": s.stats.drafts_proposed,
                                   "drafts_accepted": s.stats.drafts_accepted,
                                   "acceptance": round(s.stats.acceptance, 4),
                                   "tokens_per_forward": round(s.stats.tokens_per_forward, 4)}
        if s.error:
            body["error"] = s.error
        return JSONResponse(body, status_code=200 if s.healthy else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": created,
                                            "owned_by": "llama32-native"}]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(chat_page, headers={"x-content-type-options": "nosniff",
                                           "content-security-policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'self' 'unsafe-inline'"})

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        svc.check_common(req)
        if req.echo or (req.best_of or 1) > 1 or req.suffix:
            bad = "echo" if req.echo else "best_of" if (req.best_of or 1) > 1 else "suffix"
            raise ApiError(f"{bad} is not supported", bad)
        prompts = await run_in_threadpool(svc.prompt_ids, req.prompt)
        extra = {"logprobs": req.logprobs} if req.logprobs is not None else None
        opts: dict[str, Any] = {}
        for ids in prompts:
            opts = svc.options(req, req.max_tokens, 16, len(ids), extra)
        queue, jobs = svc.submit(prompts, opts, req.n, chat=False)
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": cfg.model_name}
        starts = _prompt_chars(req.prompt, prompts, svc.model.tokenizer)
        if req.stream:
            offsets = {j.index: starts[j.prompt_index] for j in jobs}
            return _stream(svc, queue, jobs, req, lambda ev: [completion_chunk(base, ev, svc.model, offsets)], None,
                           base)
        results = await _collect(svc, queue, jobs, request)
        choices = [completion_choice(i, r, svc.model, starts[r["prompt_index"]]) for i, r in enumerate(results)]
        return {**base, "choices": choices, "usage": usage(results)}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Any:
        svc.check_common(req)
        for old, new in (("functions", "tools"), ("function_call", "tool_choice")):
            if getattr(req, old) is not None:
                raise ApiError(f"{old} is deprecated and not supported: use {new}", old)
        plan = await run_in_threadpool(svc.chat_plan, req)
        ids = plan.prompt_ids
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        given = req.logprobs or req.top_logprobs is not None  # top_logprobs without logprobs is a 400, not ignored
        extra = {"logprobs": bool(req.logprobs), "top_logprobs": req.top_logprobs} if given else None
        opts = svc.options(req, max_tokens, cfg.default_max_tokens, len(ids), extra)
        queue, jobs = svc.submit([ids], opts, req.n, chat=True)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk" if req.stream else
                "chat.completion", "created": int(time.time()), "model": cfg.model_name}
        if req.stream:
            first = [chat_chunk(base, i, {"role": "assistant", "content": ""}, None) for i in range(req.n)]
            streams = [ToolStream(plan) for _ in range(req.n)]
            return _stream(svc, queue, jobs, req, lambda ev: chat_chunks_for(base, ev, svc.model, streams), first,
                           base)
        results = await _collect(svc, queue, jobs, request)
        choices = [chat_choice(i, r, svc.model, jobs[i].generation, plan) for i, r in enumerate(results)]
        return {**base, "choices": choices, "usage": usage(results)}

    @app.post("/score")
    async def score(req: ScoreRequest, request: Request) -> Any:
        inp = req.input_data
        if len(inp.input_string) > cfg.max_prompts:
            raise ApiError(f"at most {cfg.max_prompts} input strings, got {len(inp.input_string)}", "input_string")
        chat = not isinstance(inp.input_string[0], str)
        prompts = await run_in_threadpool(svc.score_prompts, inp.input_string)
        p = inp.parameters
        extra = {k: v for k, v in p.model_dump().items()
                 if v is not None and k in ("do_sample", "top_k", "min_p", "repetition_penalty")}
        fields = SamplingFields(temperature=p.temperature, top_p=p.top_p, seed=p.seed, stop=p.stop)
        opts: dict[str, Any] = {}
        for ids in prompts:
            opts = svc.options(fields, p.max_new_tokens, cfg.default_max_tokens, len(ids), extra)
        queue, jobs = svc.submit(prompts, opts, 1, chat=chat)
        results = await _collect(svc, queue, jobs, request)
        return [{"0": r["text"]} for r in results]


def chat_chunks_for(base: dict[str, Any], ev: TextEvent | DoneEvent, model: Any,
                    streams: list[ToolStream]) -> list[dict[str, Any]]:
    """The streamed chat chunks of an event: a content delta (text that may be a tool call is held back by the
    choice's ToolStream), or at the end the held content or the tool-call deltas, then the finish reason."""
    ts = streams[ev.index]
    if isinstance(ev, TextEvent):
        text = ts.push(ev.text)
        out = [chat_chunk(base, ev.index, {"content": text}, None, ev, model)] if text or ev.logprobs else []
        return out + [chat_chunk(base, ev.index, delta, None) for delta in ts.call_deltas()]
    rest, reply, deltas = ts.finish(ev.finish_reason)
    out = [chat_chunk(base, ev.index, {"content": rest}, None)] if rest else []
    out += [chat_chunk(base, ev.index, delta, None) for delta in deltas]
    return out + [chat_chunk(base, ev.index, {}, reply.finish_reason)]


def _prompt_chars(prompt: Any, prompts: list[list[int]], tokenizer: Any) -> list[int]:
    """Each prompt's length in characters: where its completion's text_offset starts (OpenAI's, echo or not)."""
    if isinstance(prompt, str):
        return [len(prompt)]
    if all(isinstance(p, str) for p in prompt):
        return [len(p) for p in prompt]
    return [len(tokenizer.decode(ids)) if tokenizer is not None else 0 for ids in prompts]


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _stream(svc: Service, queue: asyncio.Queue, jobs: list[Job], req: SamplingFields,
            chunks: Callable[[Any], list[dict[str, Any]]], first: list[dict[str, Any]] | None,
            base: dict[str, Any]) -> StreamingResponse:
    include_usage = bool((req.stream_options or {}).get("include_usage"))

    async def events() -> AsyncIterator[str]:
        results = [{"prompt_tokens": j.n_prompt, "completion_tokens": 0, "prompt_index": j.prompt_index}
                   for j in jobs]
        left = len(jobs)
        try:
            for c in first or ():
                yield _sse(c)
            while left:
                ev = await queue.get()
                if isinstance(ev, TextEvent):
                    if ev.text or ev.logprobs:
                        for c in chunks(ev):
                            yield _sse(c)
                elif isinstance(ev, DoneEvent):
                    results[ev.index]["completion_tokens"] = ev.n_completion
                    left -= 1
                    for c in chunks(ev):
                        yield _sse(c)
                else:
                    left -= 1
                    yield _sse(error_body(ev.message, "server_error", code="generation_failed"))
                    break
            if include_usage:
                last = {**base, "choices": [], "usage": usage(results)}
                yield _sse(last)
            yield "data: [DONE]\n\n"
        finally:  # the client left, or the stream ended: free the slots of unfinished jobs
            svc.cancel(jobs)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
