"""The CPU benchmark: synthetic Llama 3.2 1B/3B weights (Model.random), decode/prefill/TTFT/load/RSS per config.

Every figure is a median of several runs, printed next to the machine's roofline (measured read bandwidth divided
by the bytes a decode step reads). Peers (llama.cpp via llama-cpp-python, PyTorch) are measured in the same run by
`bench/peers.py` when asked (--peers). Each configuration runs in a fresh subprocess so load time and peak RSS
are its own. Usage: `llama32-native bench --arch 1b 3b --quant q4_0 q8_0 --threads 1 2 --json out.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

ARCHES = {"1b": "llama-3.2-1b", "3b": "llama-3.2-3b"}
# "q4_0-e4": q4_0 with the embedding/output table at 4 bits too (q4_0 keeps it at 8), to measure that trade.
QUANTS = ["f32", "bf16", "q8_0", "q4_0", "q4_0-e4"]


def _random_model(arch: str, quant: str, **kw: Any) -> Any:
    from . import LlamaConfig, Model

    if quant != "q4_0-e4":
        return Model.random(ARCHES[arch], quant=quant, **kw)
    from .loading.synthetic import random_tensors
    from .model import tensor_plan

    config = LlamaConfig.preset(ARCHES[arch])
    plan = {name: "q4_0" for name in tensor_plan(config, "q4_0")}
    return Model(config, random_tensors(config, plan, 0), quant="q4_0", plan=plan, **kw)


KV_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}  # per cached value


def _measure(arch: str, quant: str, threads: int, n_prompt: int, n_gen: int, repeats: int,
             kv_cache: str = "f16") -> dict[str, Any]:
    """Runs inside the worker subprocess."""
    import numpy as np

    from .sampling import Sampler, SamplingParams

    t0 = time.perf_counter()
    model = _random_model(arch, quant, threads=threads, context_length=n_prompt + n_gen + 8, max_sequences=1,
                          kv_cache=kv_cache)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    prompt = [int(x) for x in rng.integers(0, model.config.n_vocab, n_prompt)]
    sampler = Sampler(SamplingParams(do_sample=False, max_new_tokens=n_gen), model.config.n_vocab)
    engine_forward = model._forward
    core_s = [0.0]

    def timed_forward(*a: Any) -> Any:  # time spent inside the C++ forward, to get Python's share
        t = time.perf_counter()
        out = engine_forward(*a)
        core_s[0] += time.perf_counter() - t
        return out

    model._forward = timed_forward  # type: ignore[method-assign]
    pp, ttft, tg, py_share = [], [], [], []
    s = model.session()
    for _ in range(repeats):
        s.reset()
        t = time.perf_counter()
        logits = s.feed(prompt)
        tok = sampler.sample(logits, prompt)
        first = time.perf_counter() - t
        ttft.append(first)
        pp.append(n_prompt / first)
        core_s[0] = 0.0
        t = time.perf_counter()
        for _ in range(n_gen):
            logits = s.feed([tok])
            tok = sampler.sample(logits, ())
        dt = time.perf_counter() - t
        tg.append(n_gen / dt)
        py_share.append(1.0 - core_s[0] / dt)
    kv_read = 2 * model.config.n_layer * model.config.kv_dim * KV_BYTES[kv_cache] * (n_prompt + n_gen / 2)  # mean depth
    return {
        "arch": arch, "quant": quant, "threads": threads, "isa": model.isa, "kv_cache": kv_cache,
        "load_s": load_s, "weight_bytes": model.weight_bytes, "bytes_per_token": model.weight_bytes + kv_read,
        "pp_tok_s": statistics.median(pp), "ttft_s": statistics.median(ttft), "tg_tok_s": statistics.median(tg),
        "python_share": statistics.median(py_share),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_prompt": n_prompt, "n_gen": n_gen, "repeats": repeats,
    }


def _measure_batch(arch: str, quant: str, threads: int, batches: Sequence[int], n_prompt: int, n_gen: int,
                   repeats: int) -> dict[str, Any]:
    """Aggregate decode tokens/s with B sequences advanced by one forward per step (one weight read for all)."""
    import numpy as np

    top = max(batches)
    model = _random_model(arch, quant, threads=threads, context_length=n_prompt + n_gen + 8, max_sequences=top)
    rng = np.random.default_rng(0)
    sessions = [model.session() for _ in range(top)]
    out: dict[str, Any] = {"arch": arch, "quant": quant, "threads": threads, "isa": model.isa, "n_prompt": n_prompt,
                           "n_gen": n_gen, "repeats": repeats, "batch": {}}
    for b in batches:
        runs = []
        for _ in range(repeats):
            for s in sessions[:b]:  # prompts are prefilled untimed: this measures decode only
                s.reset()
                s.feed([int(x) for x in rng.integers(0, model.config.n_vocab, n_prompt)])
            seq = np.asarray([s._slot for s in sessions[:b]], np.int32)
            rows = np.arange(b, dtype=np.int32)
            toks = np.asarray(rng.integers(0, model.config.n_vocab, b), np.int32)
            t = time.perf_counter()
            for step in range(n_gen):
                pos = np.full(b, n_prompt + step, np.int32)
                logits = model._forward(toks, pos, seq, rows)
                toks = logits.argmax(axis=1).astype(np.int32)
            runs.append(b * n_gen / (time.perf_counter() - t))
        out["batch"][str(b)] = statistics.median(runs)
    return out


def _run_worker(call: str) -> dict[str, Any] | None:
    code = f"import json; from llama32_native import bench; print('RESULT ' + json.dumps(bench.{call}))"
    # The OpenMP runtime's default wait policy (spin, then sleep) is what users get: on a quiet machine it decodes
    # ~1.5x faster than OMP_WAIT_POLICY=PASSIVE (1B q4_0, 2 threads: 38.1 vs 25.7 tok/s), so it is not overridden.
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    why = (r.stderr or r.stdout).strip()[-500:]
    if r.returncode < 0:  # killed by a signal: SIGKILL with no output is usually the kernel's OOM killer
        why = f"killed by signal {-r.returncode}" + (" (out of memory?)" if r.returncode == -9 else "") + (
            f": {why}" if why else "")
    print(f"# worker failed: {why or f'exit code {r.returncode}'}", file=sys.stderr)
    return None


def _run_config(arch: str, quant: str, threads: int, n_prompt: int, n_gen: int, repeats: int,
                kv_cache: str = "f16") -> dict[str, Any]:
    r = _run_worker(f"_measure({arch!r}, {quant!r}, {threads}, {n_prompt}, {n_gen}, {repeats}, {kv_cache!r})")
    return r if r is not None else {"arch": arch, "quant": quant, "threads": threads, "error": "worker failed"}


def bandwidth(threads: int) -> float:
    """Measured read bandwidth, bytes/s (a 1 GiB buffer, median of 5)."""
    from . import _core

    return float(_core.bench_bandwidth(1024, threads, 5))


def format_table(rows: Sequence[dict[str, Any]], bw: dict[int, float]) -> str:
    head = (f"{'engine':<12}{'arch':<5}{'quant':<8}{'thr':>4}{'pp512 tok/s':>13}{'tg tok/s':>10}{'roofline':>10}"
            f"{'% roof':>8}{'TTFT s':>8}{'load s':>8}{'RSS GiB':>9}{'py %':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r.get('engine', 'ours'):<12}{r['arch']:<5}{r['quant']:<8}{r['threads']:>4}  error: {r['error'][:60]}")
            continue
        roof = bw.get(r["threads"], 0) / r["bytes_per_token"] if r.get("bytes_per_token") else float("nan")
        lines.append(
            f"{r.get('engine', 'ours'):<12}{r['arch']:<5}{r['quant']:<8}{r['threads']:>4}{r['pp_tok_s']:>13.1f}"
            f"{r['tg_tok_s']:>10.2f}{roof:>10.2f}{100 * r['tg_tok_s'] / roof:>7.0f}%{r['ttft_s']:>8.2f}"
            f"{r['load_s']:>8.1f}{r['peak_rss_bytes'] / 2**30:>9.2f}{100 * r.get('python_share', 0):>6.1f}%")
    return "\n".join(lines)


def format_batch_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aggregate decode tokens/s per batch size, and the speed-up over batch 1."""
    if not rows:
        return "(no batched results)"
    sizes = list(rows[0]["batch"])
    head = f"{'arch':<5}{'quant':<8}{'thr':>4}" + "".join(f"{'B=' + b:>14}" for b in sizes)
    lines = ["batched decode: aggregate tokens/s (x speed-up over B=1)", head, "-" * len(head)]
    for r in rows:
        one = r["batch"].get("1")
        cells = "".join(f"{v:>8.1f} ({v / one:>3.1f}x)" if one else f"{v:>14.1f}" for v in r["batch"].values())
        lines.append(f"{r['arch']:<5}{r['quant']:<8}{r['threads']:>4}{cells}")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """A PNG with one row of panels per (model, threads): prefill and decode tokens/s, one bar per engine/format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    groups = sorted({(r["arch"], r["threads"]) for r in ok})
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 0.35 * len(ok) + 1.5 * len(groups)), squeeze=False)
    for (arch, threads), (ax_pp, ax_tg) in zip(groups, axes):
        sel = sorted((r for r in ok if r["arch"] == arch and r["threads"] == threads),
                     key=lambda r: (r.get("engine", "ours") != "ours", r["quant"]))
        labels = [f"{r.get('engine', 'ours')} {r['quant']}" for r in sel]
        colors = ["C0" if r.get("engine", "ours") == "ours" else "C1" if r.get("engine") == "llama.cpp" else "C2"
                  for r in sel]
        for ax, key, what in ((ax_pp, "pp_tok_s", "prefill 512"), (ax_tg, "tg_tok_s", "decode")):
            values = [r[key] for r in sel]
            ax.barh(range(len(sel)), values, color=colors)
            ax.set_yticks(range(len(sel)), labels, fontsize=8)
            ax.invert_yaxis()
            for i, v in enumerate(values):
                ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
            ax.set_title(f"{arch.upper()}, {threads} thread{'s' if threads > 1 else ''}: {what} tokens/s", fontsize=9)
            ax.margins(x=0.15)
    fig.suptitle("Synthetic Llama 3.2 weights (blue: ours, orange: llama.cpp, green: PyTorch)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llama32-native bench", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["1b"], choices=sorted(ARCHES))
    ap.add_argument("--quant", nargs="+", default=["q4_0", "q8_0"], choices=QUANTS)
    ap.add_argument("--threads", nargs="+", type=int, default=[os.cpu_count() or 1])
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-cache", default="f16", choices=sorted(KV_BYTES), help="KV cache type (default: f16)")
    ap.add_argument("--peers", action="store_true", help="also run bench/peers.py (llama.cpp, PyTorch) if present")
    ap.add_argument("--batch", nargs="*", type=int, default=[],
                    help="also measure aggregate batched decode for these batch sizes (e.g. 1 2 4 8 16)")
    ap.add_argument("--skip-single", action="store_true", help="only the batched-decode table (with --batch)")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--plot", default=None, help="write a PNG bar chart here")
    a = ap.parse_args(argv)
    from . import system_info

    info = system_info()
    bw = {t: bandwidth(t) for t in sorted(set(a.threads))}
    print(f"# llama32_native bench: cpu={info['cpu']} isa={info['isa']} python={platform.python_version()}")
    print("# read bandwidth: " + ", ".join(f"{t} thread(s) {v / 1e9:.1f} GB/s" for t, v in bw.items()))
    rows: list[dict[str, Any]] = []
    for arch in a.arch:
        for quant in a.quant:
            for t in a.threads:
                if a.skip_single:
                    continue
                r = _run_config(arch, quant, t, a.n_prompt, a.n_gen, a.repeats, a.kv_cache)
                r["engine"] = "ours"
                rows.append(r)
                print(format_table([r], bw).splitlines()[-1], flush=True)
    if a.peers:
        rows += _peer_rows(a, bw)
    if rows:
        print()
        print(format_table(rows, bw))
    batch_rows = []
    if a.batch:
        batches = sorted(set(a.batch))
        for arch in a.arch:
            for quant in a.quant:
                for t in a.threads:
                    call = f"_measure_batch({arch!r}, {quant!r}, {t}, {batches}, 64, {min(a.n_gen, 32)}, {a.repeats})"
                    r = _run_worker(call)
                    if r is not None:
                        batch_rows.append(r)
        print()
        print(format_batch_table(batch_rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"system": info, "bandwidth": bw, "results": rows, "batched_decode": batch_rows}, f, indent=1)
    if a.plot:
        plot(rows, a.plot)
    return 0


def _peer_rows(a: Any, bw: dict[int, float]) -> list[dict[str, Any]]:
    """llama.cpp and PyTorch on the same architectures, via bench/peers.py of a source checkout (a subprocess)."""
    import tempfile

    script = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "bench", "peers.py"))
    if not os.path.exists(script):
        print("# peers: bench/peers.py not found (run from a source checkout)")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "peers.json")
        # tg starts after the prompt, as ours does (llama-bench's tg128 would start from an empty cache)
        cmd = [sys.executable, script, "--arch", *a.arch, "--threads", *map(str, a.threads), "--n-prompt",
               str(a.n_prompt), "--n-gen", str(a.n_gen), "--repeats", str(a.repeats), "--tg-depth", str(a.n_prompt),
               "--quant", "Q4_0", "Q4_0_E8", "Q8_0", "Q4_K_M", "bf16", "--json", out]
        subprocess.run(cmd, check=False)
        if not os.path.exists(out):
            return []
        with open(out) as f:
            return [peer_row(r) for r in json.load(f)["results"]]


def peer_row(r: dict[str, Any]) -> dict[str, Any]:
    """A peers.py result in this module's row format."""
    quant = r.get("quant", "?")
    row = {"engine": r.get("engine", "peer"), "arch": r.get("arch", "?"), "quant": quant,
           "threads": r.get("n_threads", 0)}
    if "tg_tps" not in r:
        row["error"] = str(r.get("error", "no result"))
        return row
    row.update({"pp_tok_s": r["pp_tps"], "tg_tok_s": r["tg_tps"], "ttft_s": r.get("n_prompt", 512) / r["pp_tps"],
                "load_s": r.get("load_s", float("nan")), "peak_rss_bytes": r.get("peak_rss_bytes", 0),
                "bytes_per_token": r.get("file_bytes") or r.get("weight_bytes") or 0, "python_share": 0.0})
    return row


if __name__ == "__main__":
    raise SystemExit(main())
