"""Running the app under uvicorn: serve() until a signal (graceful drain), or start_in_thread() for tests.

Contract: connections are bounded (concurrency cap, keep-alive and header timeouts); the first SIGINT/SIGTERM
stops accepting and lets in-flight requests finish, a second forces the exit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .app import create_app
from .config import ServerConfig

__all__ = ["serve", "start_in_thread"]


def _uvicorn_config(app: Any, host: str, port: int, log_level: str, graceful_s: float) -> Any:
    import uvicorn

    from .connections import bounded_protocol, install_log_limits

    cfg: ServerConfig = app.state.config
    install_log_limits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s,
                          timeout_keep_alive=int(max(1, cfg.idle_timeout_s)), h11_max_incomplete_event_size=64 * 1024,
                          server_header=False, http=bounded_protocol(cfg.header_timeout_s, cfg.max_connections),
                          backlog=min(2048, 4 * cfg.max_connections))


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


def start_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
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
