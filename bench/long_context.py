"""Long prompts, ours vs llama.cpp on the same synthetic weights: prefill of 8k- and 32k-token prompts and decode at
that depth; and the memory of the 3B with a 128k context and a q8_0 KV cache.

    PYTHONPATH=python python bench/long_context.py --config 1b:8192 3b:8192 1b:32768 --kv f16 q8_0 \\
        --threads 2 --json bench/results/long_context.json
    PYTHONPATH=python python bench/long_context.py --memory-only

Ours: `llama32-native bench`'s measurement (q4_0, one repeat: a fresh subprocess per configuration). llama.cpp:
bench/peers.py on the GGUF that bench/synthetic_checkpoint.py wrote for the same weights (Q4_0 with an 8-bit
embedding table, the same bytes as our q4_0), its f16 KV cache, flash attention on (its faster path for long
prompts), prompts in 512-token batches like ours. Its decode needs a second prefill, so it is measured only up to
--peer-tg-max tokens of depth.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
import synthetic_checkpoint as sc
from llama32_native import bench

MCL_CURRENT = 1


def _vm_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_128k(threads: int, n_prompt: int = 512) -> dict[str, Any]:
    """Runs in a worker subprocess: the 3B (q4_0) with a 131072-token context and a q8_0 cache. The cache is
    allocated untouched, so RSS first shows only what a 512-token prompt wrote; mlockall(MCL_CURRENT) then faults in
    every page of the process (the whole cache included), which is what the process needs at the full context."""
    import numpy as np
    from llama32_native import Model

    model = Model.random("llama-3.2-3b", quant="q4_0", threads=threads, context_length=131072, kv_cache="q8_0",
                         max_sequences=1)
    rng = np.random.default_rng(0)
    with model.session() as s:
        s.feed([int(x) for x in rng.integers(0, model.config.n_vocab, n_prompt)])
    out: dict[str, Any] = {"weight_bytes": model.weight_bytes, "kv_bytes": model._engine.kv_bytes,
                           "context_length": 131072, "kv_cache": "q8_0", "n_prompt": n_prompt,
                           "rss_after_prompt_bytes": _vm_rss()}
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT) == 0:
        out["rss_all_resident_bytes"] = _vm_rss()
        libc.munlockall()
    else:
        out["mlockall_error"] = os.strerror(ctypes.get_errno())
    return out


def run_ours(arch: str, n: int, kv: str, threads: int, n_gen: int) -> dict[str, Any]:
    r = bench._run_worker(f"_measure({arch!r}, 'q4_0', {threads}, {n}, {n_gen}, 1, {kv!r})")
    return {"engine": "ours", "arch": arch, "n_prompt": n, "kv_cache": kv, **(r or {"error": "worker failed"})}


def run_llamacpp(arch: str, n: int, threads: int, n_gen: int, peer_quant: str) -> dict[str, Any]:
    gguf = sc.ensure_gguf(arch, 0, peer_quant)
    r = peers.bench_llamacpp(gguf, threads, n_prompt=n, n_gen=n_gen, repeats=1, tg_depth=n if n_gen else 0,
                             flash_attn=True)
    return {"engine": "llama.cpp", "arch": arch, "n_prompt": n, "kv_cache": "f16", "quant": peer_quant,
            "pp_tok_s": r.get("pp_tps"), "tg_tok_s": r.get("tg_tps") if n_gen else None,
            "peak_rss_bytes": r.get("peak_rss_bytes"), "wall_s": r.get("wall_s")}


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("| model | prompt tokens | engine | KV cache | prefill tok/s | prefill s | decode tok/s at that depth | "
              "peak RSS GiB |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pp, tg, rss = r.get("pp_tok_s"), r.get("tg_tok_s"), r.get("peak_rss_bytes")
        cells = [f"{r['arch']} q4_0", str(r["n_prompt"]), r["engine"], r["kv_cache"],
                 f"{pp:.1f}" if pp else "failed", f"{r['n_prompt'] / pp:.0f}" if pp else "",
                 f"{tg:.2f}" if tg else "not measured", f"{rss / 2**30:.2f}" if rss else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["1b:8192", "3b:8192", "1b:32768"], help="ARCH:PROMPT_TOKENS")
    ap.add_argument("--kv", nargs="+", default=["f16", "q8_0"], choices=sorted(bench.KV_BYTES))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-gen", type=int, default=16, help="decode steps after the prompt")
    ap.add_argument("--peer-quant", default="Q4_0_E8", help="llama.cpp GGUF type ('' to skip llama.cpp)")
    ap.add_argument("--peer-tg-max", type=int, default=8192, help="deepest prompt at which llama.cpp decode is timed")
    ap.add_argument("--memory-only", action="store_true", help="only the 128k-context memory check")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--_memory", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._memory:
        print("RESULT " + json.dumps(memory_128k(a.threads)), flush=True)
        return 0
    rows: list[dict[str, Any]] = []
    if not a.memory_only:
        for spec in a.config:
            arch, n = spec.split(":")
            for kv in a.kv:
                rows.append(run_ours(arch, int(n), kv, a.threads, a.n_gen))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
            if a.peer_quant:
                rows.append(run_llamacpp(arch, int(n), a.threads, a.n_gen if int(n) <= a.peer_tg_max else 0,
                                         a.peer_quant))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
        print(format_table(rows))
    proc = subprocess.run([sys.executable, __file__, "--_memory", "--threads", str(a.threads)], check=False,
                          capture_output=True, text=True)
    mem = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")),
               {"error": proc.stderr[-2000:]})
    print("# 3B q4_0, context 131072, q8_0 KV cache: " + json.dumps(mem))
    if a.json:
        a.json.write_text(json.dumps({"system": peers.system_info(), "results": rows, "memory_128k": mem}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
