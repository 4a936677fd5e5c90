"""The HTTP server in-process (uvicorn in a thread) on a tiny model: OpenAI client, /score, S1 bad input,
API key, queue limit, continuous batching and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_cli import make_tiny_checkpoint  # noqa: E402

KEY = "test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("srv") / "tiny")
    model = l32.Model.from_pretrained(path, quant="f32", context_length=256, max_sequences=9)
    config = ServerConfig(model_name="tiny", api_key=KEY, max_queue=4, max_tokens=128, max_body_bytes=64 * 1024,
                          max_n=2)
    app = create_app(model, config)
    srv, thread, port = start_in_thread(app)
    yield {"url": f"http://127.0.0.1:{port}", "app": app, "model": model, "scheduler": app.state.scheduler}
    srv.should_exit = True
    thread.join(10)
    assert not app.state.scheduler.healthy  # the lifespan stopped it
    model.close()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server["url"], headers=AUTH, timeout=30) as c:
        yield c


def wait_idle(scheduler, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while scheduler.active_count or scheduler.queue_depth:
        assert time.monotonic() < deadline, "the scheduler did not go idle"
        time.sleep(0.01)


# ---------------------------------------------------------------------- OpenAI client
def test_openai_client(server) -> None:
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in oc.models.list()] == ["tiny"]

    comp = oc.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0)
    assert comp.choices[0].finish_reason == "length" and comp.choices[0].text
    assert comp.usage.completion_tokens == 6 and comp.usage.prompt_tokens == 2

    chat = oc.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0)
    text = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant" and text

    stream = oc.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0, stream=True,
                                        stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the stream adds up to the same answer
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    two = oc.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, n=2, seed=5)
    assert [c.index for c in two.choices] == [0, 1]

    cstream = oc.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in cstream) == comp.choices[0].text

    with pytest.raises(openai.BadRequestError):
        oc.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10**9)
    bad = openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_score_format(client) -> None:
    body = {"input_data": {"input_string": ["The sky is", "One, two,"],
                           "parameters": {"top_p": 0.8, "temperature": 0.8, "max_new_tokens": 10,
                                          "do_sample": True}}}
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out, list) and len(out) == 2
    assert all(list(o) == ["0"] and isinstance(o["0"], str) and o["0"] for o in out)
    assert client.post("/score", json={"input_data": {"input_string": []}}).status_code == 422
    assert client.post("/score", json={"input_data": {"input_string": "x"}}).status_code == 422


def test_health_page_and_routes(server) -> None:
    with httpx.Client(base_url=server["url"], timeout=10) as anon:
        h = anon.get("/health")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        page = anon.get("/")
        assert page.status_code == 200 and "/v1/chat/completions" in page.text
        for path in ("/v1/models", "/docs", "/openapi.json"):
            assert anon.get(path).status_code in (401, 404)
        assert anon.get("/v1/models").status_code == 401
        assert anon.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        assert anon.post("/score", json={}, headers={"authorization": "Bearer nope"}).status_code == 401
        assert anon.get("/v1/models", headers={"authorization": "Basic " + KEY}).status_code == 401


# ---------------------------------------------------------------------- S1: bad requests are 4xx, never 5xx
BAD_BODIES = [
    (b"{not json", 400),
    (b"[" * 20000 + b"]" * 20000, 400),
    (json.dumps({"prompt": "x", "max_tokens": 10**9}).encode(), 400),
    (json.dumps({"prompt": "x", "max_tokens": -1}).encode(), 400),
    (json.dumps({"prompt": "x", "n": 10**9}).encode(), 400),
    (json.dumps({"prompt": "x", "logprobs": 10**6}).encode(), 400),
    (json.dumps({"prompt": "x", "temperature": "hot"}).encode(), 422),
    (json.dumps({"prompt": "x", "max_tokens": "5"}).encode(), 422),
    (json.dumps({"prompt": "x", "max_tokens": 5.5}).encode(), 422),
    (json.dumps({"prompt": 5}).encode(), 422),
    (json.dumps({"prompt": [-1, 3]}).encode(), 400),
    (json.dumps({"prompt": [128256]}).encode(), 400),
    (json.dumps({"prompt": "x", "stop": ["a"] * 10000}).encode(), 400),
    (json.dumps({"prompt": "x", "seed": -1}).encode(), 400),
    (json.dumps({"prompt": "x" * 2000, "max_tokens": 128}).encode(), 400),  # prompt + max_tokens > context
    (b'{"prompt": "x", "temperature": NaN}', 400),
    (b'{"prompt": "x", "temperature": 1e300}', 400),
    (json.dumps({"prompt": "x", "max_tokens": 2, "unknown_field": {"a": 1}}).encode(), 200),
]


@pytest.mark.parametrize("body,status", BAD_BODIES)
def test_bad_completion_bodies(client, body: bytes, status: int) -> None:
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status >= 400:
        assert "message" in r.json()["error"]


@pytest.mark.parametrize("messages,status", [
    ([], 400),
    ("hi", 422),
    ([{"role": "wizard", "content": "x"}], 400),
    ([{"role": "user", "content": 5}], 400),
    ([{"role": "user"}], 400),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], 400),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 200),
])
def test_bad_chat_messages(client, messages, status: int) -> None:
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == status, r.text


def test_body_limits_host_and_origin(client) -> None:
    big = client.post("/v1/completions", content=b"x" * (100 * 1024), headers={"content-type": "application/json"})
    assert big.status_code == 413

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    chunked = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.post("/v1/completions", content="prompt=x",
                       headers={"content-type": "text/plain"}).status_code == 422
    assert client.post("/v1/completions", json={"prompt": "x"}, headers={"host": "evil.example"}).status_code == 403
    pre = client.options("/v1/completions", headers={"origin": "http://evil.example",
                                                     "access-control-request-method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    assert client.get("/health").status_code == 200  # still serving


# ---------------------------------------------------------------------- scheduling
def test_continuous_batching(server) -> None:
    sched = server["scheduler"]
    wait_idle(sched)
    before = sched.stats.forward_calls
    sched.stats.max_batch = 0

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=server["url"], headers=AUTH, timeout=60) as ac:
            reqs = [ac.post("/v1/completions", json={"prompt": f"Request {i}", "max_tokens": 48, "temperature": 0})
                    for i in range(4)]
            return [r.json() for r in await asyncio.gather(*reqs)]

    results = asyncio.run(run())
    tokens = sum(r["usage"]["completion_tokens"] for r in results)
    forwards = sched.stats.forward_calls - before
    assert tokens >= 4 * 40
    assert forwards < tokens / 2, (forwards, tokens)  # decoded together, one forward per step
    assert sched.stats.max_batch >= 2


def test_queue_full_gives_429(server) -> None:
    sched, model = server["scheduler"], server["model"]
    wait_idle(sched)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server["url"], headers=AUTH, timeout=60) as ac:
            tasks = [asyncio.create_task(ac.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}))
                     for _ in range(20)]
            await asyncio.sleep(1.0)  # every request has reached the server
            model._lock.release()  # let the scheduler go on
            return await asyncio.gather(*tasks)

    model._lock.acquire()  # the scheduler blocks on its next forward; requests pile up in the queue
    try:
        responses = asyncio.run(run())
    finally:
        if model._lock._is_owned():
            model._lock.release()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 20 - sched.capacity - sched.max_queue
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
    wait_idle(sched)


def test_disconnect_frees_slot(server) -> None:
    sched, model = server["scheduler"], server["model"]
    # The tiny model can finish all 128 tokens between the client's second line and the lock below (then nothing is
    # cancelled): such an attempt is repeated; a server that never cancels still fails every one.
    for _attempt in range(5):
        wait_idle(sched)
        cancelled, done = sched.stats.requests_cancelled, sched.stats.requests_done
        with httpx.Client(base_url=server["url"], headers=AUTH, timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions",
                          json={"messages": CHAT, "max_tokens": 128, "stream": True}) as r:
                lines = r.iter_lines()
                next(lines)
                next(lines)
                model._lock.acquire()  # hold the scheduler so the request cannot finish on its own
        try:
            time.sleep(0.3)  # the server notices the disconnect
        finally:
            model._lock.release()
        wait_idle(sched)
        if sched.stats.requests_done == done + 1 and sched.stats.requests_cancelled == cancelled:
            continue  # it had finished before the lock was taken
        break
    assert sched.stats.requests_cancelled == cancelled + 1
    assert model.free_slots == model.max_sequences  # every slot is back


# ---------------------------------------------------------------------- the chat page in a real browser
def _chromium() -> str | None:
    import shutil

    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _DevTools:
    """A headless Chromium driven over the DevTools protocol (a websocket): navigate, evaluate, screenshot."""

    def __init__(self, browser: str, profile: Path) -> None:
        import subprocess

        from websockets.sync.client import connect

        self.proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                                      "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", "--window-size=900,700", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def js(self, expression: str) -> object:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(10)


def test_chat_page_in_headless_chromium(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Chromium opens `/`, types a message and presses Send; the streamed answer must be the text the API gives
    for the same request. A screenshot of the page is saved with the test's files."""
    import base64

    pytest.importorskip("websockets")
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium (Debian: apt-get install chromium)")
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("page") / "tiny")
    model = l32.Model.from_pretrained(path, quant="f32", context_length=256, max_sequences=4)
    app = create_app(model, ServerConfig(model_name="tiny", max_tokens=64))
    srv, thread, port = start_in_thread(app)
    out = tmp_path_factory.mktemp("browser")
    browser_session = None
    try:
        url = f"http://127.0.0.1:{port}"
        turns = ["Hello there", "And again"]
        history: list[dict[str, str]] = []
        want = []
        for text in turns:  # what the API answers for the same conversation, greedy
            history.append({"role": "user", "content": text})
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           json={"messages": history, "temperature": 0, "max_tokens": 12})
            history.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
            want.append(history[-1]["content"])
        browser_session = b = _DevTools(browser, out / "profile")
        b.call("Page.enable")
        b.call("Page.navigate", url=url + "/")
        b.wait_for("document.readyState === 'complete' && document.getElementById('title').textContent === 'tiny'")
        b.js("document.getElementById('temp').value = '0'; document.getElementById('maxtok').value = '12'")
        for i, text in enumerate(turns, 1):  # two turns: the page sends the whole history each time
            b.js(f"document.getElementById('input').value = {json.dumps(text)}; "
                 "document.getElementById('send').click()")
            b.wait_for(f"document.body.dataset.replies === '{i}'")
        msgs = b.js("[...document.querySelectorAll('.msg')].map(e => [e.className, e.textContent])")
        assert msgs == [["msg user", turns[0]], ["msg assistant", want[0]], ["msg user", turns[1]],
                        ["msg assistant", want[1]]]
        assert b.js("document.querySelectorAll('.error').length") == 0
        assert b.js("document.getElementById('send').disabled") is False
        png = base64.b64decode(b.call("Page.captureScreenshot", format="png")["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        (out / "chat_page.png").write_bytes(png)
        b.js("document.getElementById('reset').click()")
        assert b.js("document.querySelectorAll('.msg').length") == 0
    finally:
        if browser_session is not None:
            browser_session.close()
        srv.should_exit = True
        thread.join(10)
        model.close()
