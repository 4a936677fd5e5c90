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
import threading
import time
from collections.abc import Sequence
from typing import Any

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

    from .generation import Decoder

    t0 = time.perf_counter()
    model = _random_model(arch, quant, threads=threads, context_length=n_prompt + n_gen + 8, max_sequences=1,
                          kv_cache=kv_cache)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    pp, ttft, tg, py_share = [], [], [], []
    for _ in range(repeats):
        # A new random prompt each time, so nothing is reused from the slot's cache; stop_ids=() decodes all
        # n_gen tokens whatever the random weights pick. This is the path generate() takes.
        prompt = [int(x) for x in rng.integers(0, model.config.n_vocab, n_prompt)]
        decoder = Decoder(model)
        decoder.add(model.generation(prompt, max_new_tokens=n_gen + 1, do_sample=False, stop_ids=()))
        t = time.perf_counter()
        decoder.step()  # prefill and the first token
        first = time.perf_counter() - t
        ttft.append(first)
        pp.append(n_prompt / first)
        engine_s = model.engine_seconds
        t = time.perf_counter()
        while decoder.busy:
            decoder.step()
        dt = time.perf_counter() - t
        tg.append(n_gen / dt)
        py_share.append(1.0 - (model.engine_seconds - engine_s) / dt)
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

    from .generation import Decoder

    top = max(batches)
    model = _random_model(arch, quant, threads=threads, context_length=n_prompt + n_gen + 8, max_sequences=top)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"arch": arch, "quant": quant, "threads": threads, "isa": model.isa, "n_prompt": n_prompt,
                           "n_gen": n_gen, "repeats": repeats, "batch": {}}
    for b in batches:
        runs = []
        for _ in range(repeats):
            decoder = Decoder(model)
            for _ in range(b):
                prompt = [int(x) for x in rng.integers(0, model.config.n_vocab, n_prompt)]
                decoder.add(model.generation(prompt, max_new_tokens=n_gen + 1, do_sample=False, stop_ids=()))
            decoder.step()  # prompts are prefilled untimed: this measures decode only
            t = time.perf_counter()
            while decoder.busy:
                decoder.step()
            runs.append(b * n_gen / (time.perf_counter() - t))
        out["batch"][str(b)] = statistics.median(runs)
    return out


def _run_worker(call: str, label: str = "") -> dict[str, Any] | None:
    """Run bench.<call> in a fresh Python; a progress line on stderr while it runs (elapsed seconds)."""
    code = f"import json; from llama32_native import bench; print('RESULT ' + json.dumps(bench.{call}))"
    # The package's OpenMP wait policy (llama32_native.threads: a bounded spin, then sleep) is what users get; it is
    # not overridden here, so these figures are those of generate() and serve.
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()
    ticker = threading.Thread(target=_progress_ticker, args=(label or call.split("(")[0], done), daemon=True)
    ticker.start()
    try:
        out, err = proc.communicate()
    finally:
        done.set()
        ticker.join()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    why = (err or out).strip()[-500:]
    if proc.returncode < 0:  # killed by a signal: SIGKILL with no output is usually the kernel's OOM killer
        why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "") + (
            f": {why}" if why else "")
    print(f"# worker failed: {why or f'exit code {proc.returncode}'}", file=sys.stderr)
    return None


PROGRESS_EVERY_S = 10.0


def _progress_ticker(label: str, done: threading.Event) -> None:
    """`# running <label>: N s` on stderr: rewritten in place on a terminal, a new line every 10 s otherwise."""
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()
    while not done.wait(1.0 if tty else PROGRESS_EVERY_S):
        msg = f"# running {label}: {time.perf_counter() - t0:.0f} s"
        sys.stderr.write(f"\r{msg}" if tty else msg + "\n")
        sys.stderr.flush()
    if tty:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _run_config(arch: str, quant: str, threads: int, n_prompt: int, n_gen: int, repeats: int,
                kv_cache: str = "f16") -> dict[str, Any]:
    r = _run_worker(f"_measure({arch!r}, {quant!r}, {threads}, {n_prompt}, {n_gen}, {repeats}, {kv_cache!r})",
                    f"{arch} {quant} {threads} thread(s), {repeats} repeats")
    return r if r is not None else {"arch": arch, "quant": quant, "threads": threads, "error": "worker failed"}


def bandwidth(threads: int) -> float:
    """Measured read bandwidth, bytes/s (a 1 GiB buffer, median of 5)."""
    from . import _core

    return float(_core.testing.bench_bandwidth(1024, threads, 5))


# (header lines, width): every figure with its unit; the prompt and generation lengths are filled in.
COLUMNS = [
    (("", "engine", ""), 11), (("", "model", ""), 6), (("weights", "in", "memory"), 8), (("", "threads", ""), 8),
    (("prefill", "tok/s", "({n_prompt} tok)"), 11), (("decode", "tok/s", "({n_gen} tok)"), 10),
    (("memory", "roofline", "tok/s"), 10), (("decode", "% of", "roofline"), 10), (("time to", "1st token", "s"), 10),
    (("load", "time", "s"), 7), (("peak", "RSS", "GiB"), 7), (("Python", "% of", "decode"), 8),
]
LEGEND = ("# prefill: prompt tokens/s of one pass over the prompt; decode: tokens/s generating after it (greedy); "
          "memory roofline: decode tokens/s\n# the measured read bandwidth allows (bandwidth / bytes read per token: "
          "weights + mean KV cache); time to 1st token: prefill + first\n# sample; peak RSS: of the worker process; "
          "Python % of decode: time outside the C++ forward. Medians over the repeats.")


def format_header(n_prompt: int, n_gen: int) -> str:
    lines = []
    for i in range(3):
        cells = [label[i].format(n_prompt=n_prompt, n_gen=n_gen) for label, _ in COLUMNS]
        lines.append("".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, (_, w)) in enumerate(zip(cells, COLUMNS))))
    return "\n".join([*lines, "-" * sum(w for _, w in COLUMNS)])


def format_row(r: dict[str, Any], bw: dict[int, float]) -> str:
    lead = f"{r.get('engine', 'ours'):<11}{r['arch']:<6}{r['quant']:<8}{r['threads']:<8}"
    if "error" in r:
        return f"{lead}  error: {r['error'][:80]}"
    roof = bw.get(r["threads"], 0) / r["bytes_per_token"] if r.get("bytes_per_token") else float("nan")
    pct = 100 * r["tg_tok_s"] / roof if roof else float("nan")
    return (f"{lead}{r['pp_tok_s']:>11.1f}{r['tg_tok_s']:>10.2f}{roof:>10.2f}{pct:>9.0f}%{r['ttft_s']:>10.2f}"
            f"{r['load_s']:>7.1f}{r['peak_rss_bytes'] / 2**30:>7.2f}{100 * r.get('python_share', 0):>7.1f}%")


def format_table(rows: Sequence[dict[str, Any]], bw: dict[int, float], n_prompt: int = 512, n_gen: int = 128) -> str:
    """The header, then one line per result."""
    return "\n".join([format_header(n_prompt, n_gen), *(format_row(r, bw) for r in rows)])


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
    from . import system_info
    from .threads import default_threads

    ap = argparse.ArgumentParser(prog="llama32-native bench", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["1b"], choices=sorted(ARCHES), help="model architectures")
    ap.add_argument("--quant", nargs="+", default=["q4_0", "q8_0"], choices=QUANTS, help="weight formats in memory")
    ap.add_argument("--threads", nargs="+", type=int, default=[default_threads()],
                    help="thread counts (the default is the library's: the CPUs this process may use)")
    ap.add_argument("--n-prompt", type=int, default=512, help="prompt tokens (prefill)")
    ap.add_argument("--n-gen", type=int, default=128, help="tokens generated after the prompt (decode)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians are shown)")
    ap.add_argument("--kv-cache", default="f16", choices=sorted(KV_BYTES), help="KV cache type")
    ap.add_argument("--peers", nargs="?", const="bench/peers.py", default=None, metavar="PEERS_PY",
                    help="also run the peers script of a source checkout (llama.cpp, PyTorch); "
                         "the path defaults to bench/peers.py under the current directory")
    ap.add_argument("--batch", nargs="*", type=int, default=[],
                    help="also measure aggregate batched decode for these batch sizes (e.g. 1 2 4 8 16)")
    ap.add_argument("--skip-single", action="store_true", help="only the batched-decode table (with --batch)")
    ap.add_argument("--json", default=None, help="write all results to this file")
    ap.add_argument("--plot", default=None, help="write a PNG bar chart to this file")
    a = ap.parse_args(argv)

    info = system_info()
    print(f"# llama32_native bench: cpu={info['cpu']} isa={info['isa']} python={platform.python_version()} "
          f"threads default={default_threads()} wait policy: {info.get('wait_policy', '-')}", flush=True)
    busy_before = other_load()
    bw, spread = {}, {}
    for t in sorted(set(a.threads)):
        runs = [bandwidth(t) for _ in range(2)]
        bw[t], spread[t] = max(runs), abs(runs[0] - runs[1]) / max(runs)
    print("# read bandwidth: " + ", ".join(f"{t} thread(s) {v / 1e9:.1f} GB/s" for t, v in bw.items()))
    for warning in busy_warnings(busy_before, spread):
        print(f"# WARNING: {warning}", flush=True)
    rows: list[dict[str, Any]] = []
    if not a.skip_single:
        print(format_header(a.n_prompt, a.n_gen), flush=True)
    for arch in a.arch:
        for quant in a.quant:
            for t in a.threads:
                if a.skip_single:
                    continue
                r = _run_config(arch, quant, t, a.n_prompt, a.n_gen, a.repeats, a.kv_cache)
                r["engine"] = "ours"
                rows.append(r)
                print(format_row(r, bw), flush=True)
    if a.peers:
        for r in _peer_rows(a, bw):
            rows.append(r)
            print(format_row(r, bw), flush=True)
    if rows:
        print(LEGEND)
    batch_rows = []
    if a.batch:
        batches = sorted(set(a.batch))
        for arch in a.arch:
            for quant in a.quant:
                for t in a.threads:
                    call = f"_measure_batch({arch!r}, {quant!r}, {t}, {batches}, 64, {min(a.n_gen, 32)}, {a.repeats})"
                    r = _run_worker(call, f"batched decode {arch} {quant} {t} thread(s)")
                    if r is not None:
                        batch_rows.append(r)
        print()
        print(format_batch_table(batch_rows))
    busy_after = other_load()
    if busy_after >= BUSY_CPUS and busy_before < BUSY_CPUS:
        print(f"# WARNING: other processes used {busy_after:.1f} CPUs at the end of the run: figures may be low")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"system": info, "bandwidth": bw, "results": rows, "batched_decode": batch_rows,
                       "other_load_cpus": [busy_before, busy_after]}, f, indent=1)
    if a.plot:
        plot(rows, a.plot)
    return 0


BUSY_CPUS = 0.25  # CPUs' worth of other processes' work above which the figures are flagged
BANDWIDTH_SPREAD = 0.10  # two bandwidth probes further apart than this are flagged


def other_load(seconds: float = 0.5) -> float:
    """CPUs' worth of work by other processes over a short window (threads.other_cpu_load), -1 if unknown."""
    from .threads import other_cpu_load

    busy = other_cpu_load(seconds)
    return -1.0 if busy is None else busy


def busy_warnings(busy_cpus: float, spread: dict[int, float]) -> list[str]:
    """Why the figures may be low: other processes on the CPUs, or bandwidth probes that disagree."""
    out = []
    if busy_cpus >= BUSY_CPUS:
        out.append(f"other processes are using {busy_cpus:.1f} CPUs (load average "
                   f"{os.getloadavg()[0]:.1f}): the figures will be low and noisy; run on an otherwise idle machine")
    noisy = {t: v for t, v in spread.items() if v > BANDWIDTH_SPREAD}
    if noisy:
        out.append("two read-bandwidth probes differ by " + ", ".join(f"{100 * v:.0f}% ({t} thread(s))"
                                                                      for t, v in noisy.items())
                   + ": other work is competing for memory or CPUs")
    return out


def _peer_rows(a: Any, bw: dict[int, float]) -> list[dict[str, Any]]:
    """llama.cpp and PyTorch on the same architectures, via the peers script of a source checkout (a subprocess)."""
    import tempfile

    script = os.path.abspath(a.peers)  # named on the command line: the installed package knows no checkout
    if not os.path.isfile(script):
        print(f"# peers: {a.peers} not found (run from a source checkout, or give its path: --peers PATH)")
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
