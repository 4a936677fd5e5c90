"""ASGI middleware in front of every route: Host and Origin checks (DNS rebinding, foreign pages), the API
key, CORS for listed origins, and the body's size and pace.

Contract: a request that fails a check is answered here with OpenAI's JSON error body and never reaches the
app; the body is read once, bounded in bytes and in time, and replayed to the app.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Callable

from .config import LOCAL_HOSTS, ServerConfig
from .errors import send_error, send_raw

__all__ = ["Guard", "default_hosts"]

log = logging.getLogger("llama32_native.server")


class Guard:
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
            await send_error(send, 403, f"host {host!r} is not allowed")
            return
        origin = headers.get("origin")
        cors = origin is not None and origin in self.config.cors_origins
        if origin is not None and not cors and origin.split("://", 1)[-1] != host:
            await send_error(send, 403, f"cross-origin requests from {origin!r} are not allowed")
            return
        if cors and scope["method"] == "OPTIONS":
            await send_raw(send, 204, b"", _cors_headers(origin))
            return
        needs_key = self.config.api_key is not None and scope["path"] not in ("/health", "/")
        if needs_key and not _key_ok(headers.get("authorization", ""), self.config.api_key):
            await send_error(send, 401, "invalid or missing API key (Authorization: Bearer KEY)",
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
        await self._call_app(scope, replay, send)

    async def _call_app(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Run the app; whatever escapes it (a bug, a foreign BaseException such as a Rust panic) becomes
        OpenAI's JSON 500 when no response has started, never a plain-text error page."""
        started = False

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as e:  # noqa: B036 - pyo3's PanicException derives from BaseException
            log.exception("unhandled %s in %s: %s", type(e).__name__, scope.get("path"), e)
            if not started:
                await send_error(send, 500, f"internal error: {type(e).__name__}", code="internal_error")

    async def _read_body(self, headers: dict[str, str], receive: Callable, send: Callable) -> bytes | None:
        limit = self.config.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "invalid Content-Length")
                return None
            if int(length) > limit:
                await send_error(send, 413, f"the body of {length} bytes exceeds the limit of {limit}")
                return None
        chunks, total = [], 0
        deadline = time.monotonic() + self.config.body_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await send_error(send, 408, "the request body arrived too slowly")
                return None
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > limit:
                await send_error(send, 413, f"the body exceeds the limit of {limit} bytes")
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


def default_hosts(host: str) -> tuple[str, ...] | None:
    """Host names accepted when bound to `host`: the local names for a local bind, else the operator decides."""
    if host in LOCAL_HOSTS:
        return LOCAL_HOSTS
    return None
