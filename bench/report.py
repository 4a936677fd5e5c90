"""Markdown tables for bench/RESULTS.md from the JSON files of `llama32-native bench` and `bench/peers.py`.

    python bench/report.py --ours bench/results/ours_main.json bench/results/ours_extra.json \
        --peers bench/results/peers.json [--plot bench/results/decode_prefill.png]

Every engine's decode figure is shown next to its roofline: the measured read bandwidth of that thread count
divided by the bytes one decode step reads (the weights, or the GGUF file for llama.cpp, plus the f16 KV cache
at the mean depth). Ratios compare our formats with llama.cpp's closest ones on the same synthetic weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    from llama32_native.bench import peer_row, plot
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    from llama32_native.bench import peer_row, plot

GB = 1e9
# llama.cpp format closest to each of ours: Q4_0_E8 stores the embedding/output table in Q8_0 like our q4_0.
PEER_OF = {"q4_0": ["Q4_0_E8", "Q4_0", "Q4_K_M"], "q8_0": ["Q8_0"], "bf16": ["torch-bf16", "bf16"]}


def load(paths: list[str]) -> tuple[list[dict[str, Any]], dict[int, float], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    bw: dict[int, float] = {}
    batched: list[dict[str, Any]] = []
    for p in paths:
        d = json.load(open(p))
        bw.update({int(k): float(v) for k, v in d.get("bandwidth", {}).items()})
        rows += [dict(r, engine="ours") for r in d["results"] if "error" not in r]
        batched += d.get("batched_decode", [])
    return rows, bw, batched


def load_peers(path: str, kv_bytes: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for r in json.load(open(path))["results"]:
        row = peer_row(r)
        if "error" in row:
            continue
        row["engine"] = "PyTorch" if row["engine"] == "torch" else "llama.cpp"
        row["bytes_per_token"] += kv_bytes.get(row["arch"], 0.0)  # peers.py counts the file; add the KV reads
        out.append(row)
    return out


def table(rows: list[dict[str, Any]], bw: dict[int, float], arch: str, threads: int) -> str:
    lines = [f"**{arch.upper()}, {threads} thread{'s' if threads > 1 else ''}** (read bandwidth "
             f"{bw.get(threads, float('nan')) / GB:.1f} GB/s)", "",
             "| engine | format | GB read / token | prefill 512 tok/s | decode tok/s | roofline tok/s | % of roofline "
             "| TTFT s | load s | peak RSS GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    sel = [r for r in rows if r["arch"] == arch and r["threads"] == threads]
    sel.sort(key=lambda r: (r["engine"] != "ours", r["quant"]))
    for r in sel:
        roof = bw.get(threads, 0) / r["bytes_per_token"] if r.get("bytes_per_token") else float("nan")
        lines.append(f"| {r['engine']} | {r['quant']} | {r['bytes_per_token'] / GB:.2f} | {r['pp_tok_s']:.1f} | "
                     f"{r['tg_tok_s']:.2f} | {roof:.1f} | {100 * r['tg_tok_s'] / roof:.0f}% | {r['ttft_s']:.2f} | "
                     f"{r['load_s']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} |")
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | threads | ours | peer | prefill ours / peer | decode ours / peer |", "|---|---|---|---|---|---|"]
    ours = [r for r in rows if r["engine"] == "ours"]
    for r in sorted(ours, key=lambda r: (r["arch"], r["threads"], r["quant"])):
        for peer_q in PEER_OF.get(r["quant"], []):
            for p in rows:
                if p["engine"] != "ours" and p["quant"] == peer_q and p["arch"] == r["arch"] and \
                        p["threads"] == r["threads"]:
                    lines.append(f"| {r['arch']} | {r['threads']} | {r['quant']} | {p['engine']} {peer_q} | "
                                 f"{r['pp_tok_s'] / p['pp_tok_s']:.2f}x | {r['tg_tok_s'] / p['tg_tok_s']:.2f}x |")
    return "\n".join(lines)


def batch_table(batched: list[dict[str, Any]]) -> str:
    if not batched:
        return ""
    sizes = list(batched[0]["batch"])
    lines = ["| model | format | threads | " + " | ".join(f"B={b}" for b in sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    for r in batched:
        one = r["batch"].get("1")
        cells = " | ".join(f"{v:.1f} ({v / one:.1f}x)" for v in r["batch"].values())
        lines.append(f"| {r['arch']} | {r['quant']} | {r['threads']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", nargs="+", required=True)
    ap.add_argument("--peers", default=None)
    ap.add_argument("--plot", default=None)
    a = ap.parse_args(argv)
    rows, bw, batched = load(a.ours)
    kv = {}
    for r in rows:  # the f16 KV cache read per decode step, as ours counts it
        kv[r["arch"]] = r["bytes_per_token"] - r["weight_bytes"]
    if a.peers:
        rows += load_peers(a.peers, kv)
    for arch in sorted({r["arch"] for r in rows}):
        for t in sorted({r["threads"] for r in rows}):
            print(table(rows, bw, arch, t), end="\n\n")
    print("Ratios (same synthetic weights, same run):\n")
    print(ratios(rows), end="\n\n")
    if batched:
        print("Batched decode, aggregate tokens/s (speed-up over B=1):\n")
        print(batch_table(batched))
    if a.plot:
        plot(rows, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
