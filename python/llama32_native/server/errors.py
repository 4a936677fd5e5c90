"""API errors: OpenAI's JSON error body with the real HTTP status, for every failure a request can meet.

Contract: routes raise ApiError (or an l32.Error, mapped here to a 4xx); nothing reaches the client as a
plain-text 500.
"""

from __future__ import annotations

import json
from typing import Any, Callable

__all__ = ["ApiError", "error_body", "send_raw", "send_error"]


class ApiError(Exception):
    """A request the server understood but will not serve, with its HTTP status (400 unless said otherwise)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def error_body(message: str, kind: str | None = None, param: str | None = None, code: str | None = None,
               status: int = 400) -> dict[str, Any]:
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def send_raw(send: Callable, status: int, body: bytes, headers: dict[str, str]) -> None:
    hdrs = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Callable, status: int, message: str, headers: dict[str, str] | None = None,
                      code: str | None = None) -> None:
    body = json.dumps(error_body(message, code=code, status=status)).encode()
    await send_raw(send, status, body, {"content-type": "application/json", "connection": "close",
                                         **(headers or {})})
