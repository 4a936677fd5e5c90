"""The server under abuse: abandoned non-streaming requests, dead clients in the queue, idle and trickling
connections past a file-descriptor limit, an empty API key, an empty prompt on a model without BOS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import subprocess_env, tiny_config  # noqa: E402
from conftest_tokenizer import chatml_tokenizer  # noqa: E402
from test_cli import make_tiny_checkpoint  # noqa: E402

KEY = "limits-key"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("lim") / "tiny")
    model = l32.Model.from_pretrained(path, quant="f32", context_length=2048, max_sequences=4)
    config = ServerConfig(model_name="tiny", api_key=KEY, max_queue=3, max_tokens=1500)
    app = create_app(model, config)
    srv, thread, port = start_in_thread(app)
    yield {"url": f"http://127.0.0.1:{port}", "model": model, "scheduler": app.state.scheduler}
    srv.should_exit = True
    thread.join(10)
    model.close()


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _post_and_leave(url: str, path: str, body: dict, leave_after: float) -> None:
    try:
        httpx.post(url + path, json=body, headers=AUTH, timeout=leave_after)
    except httpx.TimeoutException:
        pass


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 1500, "temperature": 0}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 1500, "temperature": 0}),
    ("/score", {"input_data": {"input_string": ["Hello"], "parameters": {"max_new_tokens": 1500}}}),
])
def test_abandoned_request_stops_within_a_step(server, path, body) -> None:
    """A non-streaming client that gives up is cancelled while tokens are still being produced."""
    sched, model = server["scheduler"], server["model"]
    wait_for(lambda: sched.active_count == 0 and sched.queue_depth == 0)
    cancelled, done = sched.stats.requests_cancelled, sched.stats.requests_done
    with model._lock:  # the scheduler stalls on its next forward: the request cannot finish by itself
        t = threading.Thread(target=_post_and_leave, args=(server["url"], path, body, 2.0))
        t.start()
        wait_for(lambda: sched.active_count == 1)
        t.join()  # the client has left, with the generation still running
    wait_for(lambda: sched.active_count == 0, timeout=5.0)
    assert sched.stats.requests_cancelled == cancelled + 1
    assert sched.stats.requests_done == done
    assert model.free_slots == model.max_sequences


def test_queue_counts_only_live_clients(server) -> None:
    sched, model = server["scheduler"], server["model"]
    wait_for(lambda: sched.active_count == 0 and sched.queue_depth == 0)
    body = {"prompt": "Hello", "max_tokens": 50, "temperature": 0}
    with model._lock:
        busy = [threading.Thread(target=_post_and_leave, args=(server["url"], "/v1/completions", body, 1.0))
                for _ in range(model.max_sequences + 3)]  # fill every slot, then the queue (max_queue=3)
        for t in busy:
            t.start()
        wait_for(lambda: sched.queue_depth == 3)
        for t in busy:
            t.join()  # every one of those clients has left
        wait_for(lambda: sched.queue_depth == 0, timeout=3.0)  # nobody is waiting any more
        r = []
        t = threading.Thread(target=lambda: r.append(httpx.post(server["url"] + "/v1/completions", json=body,
                                                                 headers=AUTH, timeout=30)))
        t.start()
        wait_for(lambda: sched.queue_depth >= 1 or bool(r))
    t.join()
    assert r[0].status_code == 200, r[0].text  # not a 429 caused by clients that were gone


def test_empty_prompt_without_bos_is_a_400() -> None:
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    model = l32.Model.random(tiny_config(n_vocab=270), quant="f32", threads=1, context_length=64,
                             tokenizer=chatml_tokenizer(add_bos=False))
    app = create_app(model, ServerConfig())
    srv, thread, port = start_in_thread(app)
    try:
        for stream in (False, True):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "", "stream": stream})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
    finally:
        srv.should_exit = True
        thread.join(10)


def test_empty_api_key_is_refused_at_start(tmp_path) -> None:
    for args, env in ((["--api-key", ""], {}), ([], {"LLAMA32_API_KEY": ""}), (["--api-key", "  "], {})):
        r = subprocess.run([sys.executable, "-m", "llama32_native", "serve", str(tmp_path / "none"), *args],
                           capture_output=True, text=True, env=subprocess_env(**env), timeout=60)
        assert r.returncode != 0
        assert "API key is empty" in r.stderr and "Traceback" not in r.stderr


_BOUNDED_SERVER = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
import llama32_native as l32
from conftest import tiny_config
from conftest_tokenizer import chatml_tokenizer
from llama32_native.server import ServerConfig, serve
model = l32.Model.random(tiny_config(n_vocab=270), quant="f32", threads=1, context_length=64,
                         tokenizer=chatml_tokenizer())
serve(model, port=int(sys.argv[1]), config=ServerConfig(header_timeout_s=1.0, max_connections=48), log_level="info")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idle_and_trickling_connections_are_bounded(tmp_path) -> None:
    """300 sockets against a server limited to 128 file descriptors: idle ones and header tricklers are closed,
    the server keeps answering, and its log stays small."""
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), env["PYTHONPATH"]])
    proc = subprocess.Popen([sys.executable, "-c", _BOUNDED_SERVER, str(port)], stdout=log, stderr=log, env=env)
    socks: list[socket.socket] = []
    try:
        wait_for(lambda: _health(port) == 200, timeout=60)
        for i in range(300):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            if i % 2:
                s.sendall(b"GET /health HTTP/1.1\r\n")  # a request line, then nothing: a slowloris
            socks.append(s)
        t0 = time.monotonic()
        closed = 0
        for s in socks:  # every one is closed by the server within the header deadline (or at once past the cap)
            s.settimeout(max(0.1, 8.0 - (time.monotonic() - t0)))
            try:
                closed += s.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                closed += 0 if isinstance(sys.exc_info()[1], socket.timeout) else 1
        assert closed == len(socks), f"{len(socks) - closed} connections were left open"
        assert _health(port) == 200
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(30)
        log.close()
    size = os.path.getsize(tmp_path / "server.log")
    assert size < 200_000, f"the server wrote {size} bytes of log"


def _health(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


class _Panic(BaseException):
    """Stands in for pyo3's PanicException (a BaseException that `except Exception` does not catch)."""


def test_anything_escaping_a_route_is_a_json_500() -> None:
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    model = l32.Model.random(tiny_config(n_vocab=270), quant="f32", threads=1, context_length=64,
                             tokenizer=chatml_tokenizer())
    app = create_app(model, ServerConfig())

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise _Panic("panicked") if kind == "panic" else RuntimeError("a bug")

    srv, thread, port = start_in_thread(app)
    try:
        for kind in ("panic", "bug"):
            r = httpx.get(f"http://127.0.0.1:{port}/boom/{kind}")
            assert r.status_code == 500
            assert r.json()["error"]["code"] == "internal_error"
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        srv.should_exit = True
        thread.join(10)
