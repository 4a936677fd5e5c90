"""Peer baselines: llama.cpp (through llama-cpp-python) and PyTorch/transformers on the CPU.

Contract: `bench_llamacpp(gguf, n_threads)` and `bench_torch(hf_dir, n_threads)` each run one
configuration in a fresh subprocess (so RSS is the model's own) and return a dict with pp
(prompt processing, one n_prompt-token prompt in n_batch chunks) and tg (n_gen single-token
greedy decode steps) tokens/s as medians over `repeats`, load time and peak RSS. Conventions
follow llama-bench: random prompt tokens, logits of the last prompt token only, a warm-up pass,
tg starting at KV depth `tg_depth` (0 like llama-bench's tg128).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULT_MARK = "@@PEERS_RESULT "
WARMUP_TOKENS = 32
DEFAULT_TIMEOUT_S = 3600
# How the llama-cpp-python wheel measured here was built (bench/README.md); override with the
# LLAMA_CPP_BUILD_FLAGS environment variable when measuring another build.
DEFAULT_BUILD_FLAGS = (
    'CMAKE_ARGS=\'-DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" '
    '"-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"\' '
    "pip install --no-cache-dir llama-cpp-python"
)


# ----------------------------------------------------------------------------- helpers
def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _busy_cpu_s() -> float:
    """Machine-wide busy CPU seconds so far (user+nice+system+irq+softirq+steal; Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _random_tokens(n: int, n_vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, n_vocab, size=n).tolist()


def _summary(pp: list[float], tg: list[float]) -> dict[str, Any]:
    return {
        "pp_tps": statistics.median(pp) if pp else None,
        "tg_tps": statistics.median(tg) if tg else None,
        "pp_tps_best": max(pp) if pp else None,
        "tg_tps_best": max(tg) if tg else None,
        "pp_tps_all": pp,
        "tg_tps_all": tg,
    }


def _check_sizes(n_threads: int, n_prompt: int, n_gen: int, repeats: int, tg_depth: int) -> None:
    for name, v, lo in (("n_threads", n_threads, 1), ("n_prompt", n_prompt, 0), ("n_gen", n_gen, 0),
                        ("repeats", repeats, 1), ("tg_depth", tg_depth, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")


# ----------------------------------------------------------------------------- llama.cpp worker
def _llamacpp_worker(p: dict[str, Any]) -> dict[str, Any]:
    import ctypes

    import llama_cpp

    n_prompt, n_gen, n_batch, depth = p["n_prompt"], p["n_gen"], p["n_batch"], p["tg_depth"]
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=p["gguf_path"], n_ctx=max(n_prompt, depth + n_gen, WARMUP_TOKENS + 1),
        n_batch=n_batch, n_ubatch=n_batch, n_threads=p["n_threads"],
        n_threads_batch=p["n_threads"], flash_attn=p["flash_attn"], use_mmap=p["use_mmap"],
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    rss_load = _rss_bytes()
    ctx = llm._ctx.ctx
    mem = llama_cpp.llama_get_memory(ctx)
    n_vocab = llm.n_vocab()

    def decode(tokens: list[int]) -> None:
        for i in range(0, len(tokens), n_batch):
            chunk = tokens[i:i + n_batch]
            arr = (llama_cpp.llama_token * len(chunk))(*chunk)
            rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(chunk)))
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        llama_cpp.llama_synchronize(ctx)

    def greedy(n: int, tok: int) -> None:
        for _ in range(n):
            decode([tok])
            logits = llama_cpp.llama_get_logits_ith(ctx, -1)
            tok = int(np.ctypeslib.as_array(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)),
                                            shape=(n_vocab,)).argmax())

    prompt = _random_tokens(max(n_prompt, depth, WARMUP_TOKENS), n_vocab, p["seed"])
    t0 = time.perf_counter()
    decode(prompt[:WARMUP_TOKENS])  # warm-up: faults the weights in, starts the thread pool
    greedy(1, prompt[0])
    warmup_s = time.perf_counter() - t0
    pp, tg, perf = [], [], []
    for _ in range(p["repeats"]):
        if n_prompt:
            llama_cpp.llama_memory_clear(mem, True)
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            decode(prompt[:n_prompt])
            pp.append(n_prompt / (time.perf_counter() - t0))
            d = llama_cpp.llama_perf_context(ctx)
            perf.append({"t_p_eval_ms": d.t_p_eval_ms, "n_p_eval": d.n_p_eval})
        if n_gen:
            llama_cpp.llama_memory_clear(mem, True)
            decode(prompt[:depth])
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            greedy(n_gen, prompt[depth % len(prompt)])
            tg.append(n_gen / (time.perf_counter() - t0))
            d = llama_cpp.llama_perf_context(ctx)
            perf.append({"t_eval_ms": d.t_eval_ms, "n_eval": d.n_eval})
    out = {"load_s": load_s, "warmup_s": warmup_s, "rss_after_load_bytes": rss_load,
           "perf_counters": perf, **_summary(pp, tg)}
    llm.close()
    return out


# ----------------------------------------------------------------------------- torch worker
def _torch_worker(p: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(p["n_threads"])
    n_prompt, n_gen, depth = p["n_prompt"], p["n_gen"], p["tg_depth"]
    dtype = getattr(torch, p["dtype"])
    t0 = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(p["hf_dir"], dtype=dtype)
    model.eval()
    load_s = time.perf_counter() - t0
    rss_load = _rss_bytes()
    n_vocab = model.config.vocab_size
    prompt = torch.tensor([_random_tokens(max(n_prompt, depth, WARMUP_TOKENS), n_vocab, p["seed"])])

    def forward(ids: torch.Tensor, past: Any = None) -> Any:
        return model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)

    def greedy(n: int, tok: torch.Tensor, past: Any) -> None:
        for _ in range(n):
            out = forward(tok, past)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)

    with torch.inference_mode():
        t0 = time.perf_counter()
        greedy(1, prompt[:, :1], forward(prompt[:, :WARMUP_TOKENS]).past_key_values)
        warmup_s = time.perf_counter() - t0
        pp, tg = [], []
        for _ in range(p["repeats"]):
            if n_prompt:
                t0 = time.perf_counter()
                forward(prompt[:, :n_prompt])
                pp.append(n_prompt / (time.perf_counter() - t0))
            if n_gen:
                past = forward(prompt[:, :depth]).past_key_values if depth else None
                start = prompt[:, depth % prompt.shape[1]:][:, :1]
                t0 = time.perf_counter()
                greedy(n_gen, start, past)
                tg.append(n_gen / (time.perf_counter() - t0))
    return {"load_s": load_s, "warmup_s": warmup_s, "rss_after_load_bytes": rss_load,
            "torch_threads": torch.get_num_threads(), **_summary(pp, tg)}


_WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "llamacpp": _llamacpp_worker,
    "torch": _torch_worker,
}


def _worker_main(kind: str, params_json: str) -> int:
    params = json.loads(params_json)
    res = _WORKERS[kind](params)
    res["peak_rss_bytes"] = _peak_rss_bytes()
    print(RESULT_MARK + json.dumps(res), flush=True)
    return 0


def _run_worker(kind: str, params: dict[str, Any], n_threads: int, timeout_s: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; thread env vars pinned to n_threads."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(n_threads), "MKL_NUM_THREADS": str(n_threads),
                "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"})
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", kind, json.dumps(params)]
    load_before = os.getloadavg()
    busy0, own0 = _busy_cpu_s(), _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                          timeout=timeout_s)
    wall = time.perf_counter() - t0
    # Cores kept busy by other processes while this one ran (the machine is shared).
    foreign = max(0.0, (_busy_cpu_s() - busy0) - (_children_cpu_s() - own0)) / wall
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} benchmark worker failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res.update({"wall_s": wall, "loadavg_before": list(load_before), "foreign_cores": foreign})
    return res


# ----------------------------------------------------------------------------- public API
def bench_llamacpp(
    gguf_path: str | os.PathLike,
    n_threads: int,
    n_prompt: int = 512,
    n_gen: int = 128,
    repeats: int = 3,
    *,
    n_batch: int = 512,
    tg_depth: int = 0,
    flash_attn: bool = False,
    use_mmap: bool = True,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """pp/tg tokens/s, load time and peak RSS of llama.cpp on one GGUF (fresh subprocess)."""
    _check_sizes(n_threads, n_prompt, n_gen, repeats, tg_depth)
    path = Path(gguf_path)
    if not path.is_file():
        raise ValueError(f"gguf_path {path} is not a file")
    params = {"gguf_path": str(path), "n_threads": n_threads, "n_prompt": n_prompt,
              "n_gen": n_gen, "repeats": repeats, "n_batch": n_batch, "tg_depth": tg_depth,
              "flash_attn": flash_attn, "use_mmap": use_mmap, "seed": seed}
    res = _run_worker("llamacpp", params, n_threads, timeout_s)
    return {"engine": "llama.cpp", "model_file": str(path), "file_bytes": path.stat().st_size,
            **{k: v for k, v in params.items() if k != "gguf_path"}, **res}


def bench_torch(
    hf_dir: str | os.PathLike,
    n_threads: int,
    dtype: str = "bfloat16",
    n_prompt: int = 512,
    n_gen: int = 128,
    repeats: int = 3,
    *,
    tg_depth: int = 0,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """pp/tg tokens/s, load time and peak RSS of transformers' LlamaForCausalLM (subprocess)."""
    _check_sizes(n_threads, n_prompt, n_gen, repeats, tg_depth)
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
    hf = Path(hf_dir)
    if not (hf / "config.json").is_file():
        raise ValueError(f"hf_dir {hf} has no config.json")
    params = {"hf_dir": str(hf), "n_threads": n_threads, "dtype": dtype, "n_prompt": n_prompt,
              "n_gen": n_gen, "repeats": repeats, "tg_depth": tg_depth, "seed": seed}
    res = _run_worker("torch", params, n_threads, timeout_s)
    size = sum(f.stat().st_size for f in hf.glob("*.safetensors"))
    return {"engine": "torch", "model_file": str(hf), "file_bytes": size,
            **{k: v for k, v in params.items() if k != "hf_dir"}, **res}


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def system_info() -> dict[str, Any]:
    """What was measured: CPU, llama.cpp build (version, flags, system info), torch build."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "n_cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": _pkg_version("llama-cpp-python"),
        "llama_cpp_build_flags": os.environ.get("LLAMA_CPP_BUILD_FLAGS", DEFAULT_BUILD_FLAGS),
        "torch": _pkg_version("torch"), "transformers": _pkg_version("transformers"),
    }
    try:
        import llama_cpp

        info["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal: torch-only runs need no llama.cpp
        info["llama_cpp_system_info"] = f"unavailable: {e}"
    try:
        import torch

        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception as e:  # noqa: BLE001
        info["torch_cpu_capability"] = f"unavailable: {e}"
    return info


# ----------------------------------------------------------------------------- CLI
def _parse_quant(q: str) -> tuple[str, str]:
    """'bf16' / 'torch-<dtype>' -> ('torch', dtype); anything else -> ('llama.cpp', QTYPE)."""
    low = q.lower()
    if low in ("bf16", "torch", "torch-bf16"):
        return "torch", "bfloat16"
    if low.startswith("torch-"):
        return "torch", {"f32": "float32", "f16": "float16"}.get(low[6:], low[6:])
    return "llama.cpp", q.upper().removeprefix("GGUF-")


def format_table(results: Sequence[dict[str, Any]]) -> str:
    head = (f"{'engine':9s} {'arch':4s} {'quant':10s} {'thr':>3s} {'pp t/s':>8s} {'tg t/s':>8s} "
            f"{'load s':>7s} {'peak RSS GB':>11s} {'file GB':>7s} {'other':>5s}")
    rows = [head, "-" * len(head)]
    for r in results:
        def fmt(v: float | None, spec: str) -> str:
            return format(v, spec) if v is not None else "-"
        rows.append(
            f"{r['engine']:9s} {r.get('arch', '?'):4s} {r.get('quant', '?'):10s} {r['n_threads']:3d} "
            f"{fmt(r['pp_tps'], '8.2f')} {fmt(r['tg_tps'], '8.2f')} {r['load_s']:7.2f} "
            f"{r['peak_rss_bytes'] / 1e9:11.2f} {r['file_bytes'] / 1e9:7.2f} "
            f"{r.get('foreign_cores', float('nan')):5.2f}"
        )
    return "\n".join(rows)


def _save(path: Path | None, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_worker"]:
        return _worker_main(argv[1], argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import synthetic_checkpoint as sc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["1b"], choices=sorted(sc.ARCHES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--quant", nargs="+", default=["Q4_0", "Q8_0", "Q4_K_M", "bf16"],
                    help="llama.cpp GGUF types (Q4_0 Q4_0_E8 Q8_0 Q4_K_M F16 GGUF-BF16) or torch "
                         "(bf16 = torch-bf16, torch-f32)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic checkpoint seed")
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tg-depth", type=int, default=0, help="KV depth where tg starts (0 = llama-bench)")
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp flash attention")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per configuration, s")
    ap.add_argument("--json", type=Path, default=None, help="write results here (after each config)")
    args = ap.parse_args(argv)

    meta = {"system": system_info(), "args": {k: str(v) for k, v in vars(args).items()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print("\n".join(f"# {k}: {v}" for k, v in meta["system"].items()), flush=True)
    results: list[dict[str, Any]] = []
    common = {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "repeats": args.repeats,
              "tg_depth": args.tg_depth, "seed": 0, "timeout_s": args.timeout}
    for arch in args.arch:
        for q in args.quant:
            engine, kind = _parse_quant(q)
            t0 = time.perf_counter()
            if engine == "torch":
                model = sc.ensure_hf_checkpoint(arch, args.seed)
            else:
                model = sc.ensure_gguf(arch, args.seed, kind)
            prep_s = time.perf_counter() - t0
            for n in args.threads:
                try:
                    if engine == "torch":
                        r = bench_torch(model, n, kind, **common)
                    else:
                        r = bench_llamacpp(model, n, flash_attn=args.flash_attn, **common)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"! {engine} {arch} {q} threads={n} failed: {e}", file=sys.stderr, flush=True)
                    continue
                r.update({"arch": arch, "quant": kind if engine == "llama.cpp" else f"torch-{q}",
                          "checkpoint_seed": args.seed, "prepare_s": prep_s})
                if engine == "llama.cpp":
                    r["gguf_tensor_types"] = sc.gguf_tensor_types(model)
                results.append(r)
                print(format_table([r]).splitlines()[-1], flush=True)
                _save(args.json, meta, results)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _save(args.json, meta, results)
    print()
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
