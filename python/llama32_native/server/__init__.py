"""The OpenAI-compatible HTTP server: a scheduler thread decodes every request together (continuous batching).

Layers: config (limits), scheduler (no web framework: importable and testable alone), service (requests to
jobs), schemas/responses (OpenAI shapes), guard (ASGI checks before any route), app (routes, SSE), run
(uvicorn). Binds 127.0.0.1 by default; with an API key every route but /health and the chat page needs it.
"""

from __future__ import annotations

from typing import Any

from .config import LOCAL_HOSTS, ServerConfig
from .scheduler import DoneEvent, ErrorEvent, Job, QueueFullError, Scheduler, ShuttingDownError, TextEvent

__all__ = ["ServerConfig", "Scheduler", "Job", "QueueFullError", "ShuttingDownError", "TextEvent", "DoneEvent",
           "ErrorEvent", "LOCAL_HOSTS", "create_app", "serve", "start_in_thread"]


def __getattr__(name: str) -> Any:
    # The web layers need FastAPI/uvicorn (the [server] extra); the scheduler and config do not.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("serve", "start_in_thread"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
