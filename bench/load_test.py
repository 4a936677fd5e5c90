"""A bounded load test of the HTTP server: N concurrent clients for D seconds; p50/p99 latency, tokens/s, statuses.

Run against a running server (`--url http://127.0.0.1:8000 --api-key KEY`) or let it start one in-process
on a model (`--model PATH`). Example:
    PYTHONPATH=python python bench/load_test.py --model /path/to/model --duration 10 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

try:
    import llama32_native  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def client_loop(client: Any, deadline: float, args: argparse.Namespace, out: dict[str, Any], i: int) -> None:
    n = 0
    while time.monotonic() < deadline:
        body = {"model": "default", "messages": [{"role": "user", "content": f"Client {i} request {n}: hello"}],
                "max_tokens": args.max_tokens, "temperature": 0.7, "stream": args.stream}
        n += 1
        t0 = time.monotonic()
        try:
            if args.stream:
                status, tokens, first = await _streamed(client, body, t0)
                if first is not None:
                    out["ttft"].append(first)
            else:
                r = await client.post("/v1/chat/completions", json=body)
                status = r.status_code
                tokens = r.json()["usage"]["completion_tokens"] if status == 200 else 0
        except Exception as e:  # timeouts, resets: count them, keep going
            out["status"][type(e).__name__] += 1
            continue
        out["status"][status] += 1
        if status == 200:
            out["latency"].append(time.monotonic() - t0)
            out["tokens"] += tokens
        elif status in (429, 503):
            await asyncio.sleep(float(args.backoff))


async def _streamed(client: Any, body: dict[str, Any], t0: float) -> tuple[int, int, float | None]:
    tokens, first = 0, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, 0, None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("choices") and obj["choices"][0]["delta"].get("content"):
                tokens += 1  # one chunk per token, approximately (held-back UTF-8 merges a few)
                if first is None:
                    first = time.monotonic() - t0
    return 200, tokens, first


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {"latency": [], "ttft": [], "tokens": 0, "status": collections.Counter()}
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout, limits=limits) as client:
        t0 = time.monotonic()
        deadline = t0 + args.duration
        await asyncio.gather(*(client_loop(client, deadline, args, out, i) for i in range(args.concurrency)))
        out["wall_s"] = time.monotonic() - t0
    return out


def report(out: dict[str, Any], extra: dict[str, Any]) -> None:
    lat = out["latency"]
    print(f"requests by status: {dict(out['status'])}")
    print(f"completed: {len(lat)} in {out['wall_s']:.1f} s  ({len(lat) / out['wall_s']:.2f} req/s)")
    if lat:
        print(f"latency  p50 {percentile(lat, 50):.3f} s  p95 {percentile(lat, 95):.3f} s  "
              f"p99 {percentile(lat, 99):.3f} s  mean {statistics.fmean(lat):.3f} s")
    if out["ttft"]:
        print(f"first token  p50 {percentile(out['ttft'], 50):.3f} s  p99 {percentile(out['ttft'], 99):.3f} s")
    print(f"tokens/s (generated, all clients): {out['tokens'] / out['wall_s']:.1f}")
    for k, v in extra.items():
        print(f"{k}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="a running server")
    src.add_argument("--model", help="start a server in-process on this model")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds (default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=16, help="clients (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=32, help="per request (default: %(default)s)")
    ap.add_argument("--stream", action="store_true", help="stream the answers (measures time to first token)")
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--backoff", type=float, default=0.2, help="seconds to wait after a 429/503")
    args = ap.parse_args(argv)

    if args.url:
        out = asyncio.run(run(args.url, args))
        report(out, {})
        return 0
    from llama32_native import Model
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    model = Model.from_pretrained(args.model, quant=args.quant, context_length=2048,
                                  max_sequences=args.max_batch + 1)
    app = create_app(model, ServerConfig(model_name="default", api_key=args.api_key, max_queue=args.max_queue))
    server, thread, port = start_in_thread(app)
    try:
        out = asyncio.run(run(f"http://127.0.0.1:{port}", args))
    finally:
        server.should_exit = True
        thread.join(30)
    st = app.state.scheduler.stats
    report(out, {"forward calls": st.forward_calls,
                 "largest batch": st.max_batch, "max queue depth": st.max_queue_depth,
                 "cancelled": st.requests_cancelled, "failed": st.requests_failed})
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
