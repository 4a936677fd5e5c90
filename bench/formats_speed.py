"""Matmul speed of each quantized weight format on the Llama 3.2 1B/3B matrix shapes, per byte read.

Contract: for every (shape, rows of activations) the formats are timed in interleaved rounds (the median of each,
so a busy machine slows all alike) with _core.testing.bench_matmul; printed as time, weight GB/s and the ratio to
q4_0 per byte (1.0 = as fast per byte as q4_0). Run: PYTHONPATH=python python bench/formats_speed.py [--arch 1b]
"""

from __future__ import annotations

import argparse
import statistics

from llama32_native._core import testing
from llama32_native.schema import BLOCK_BYTES

SHAPES = {  # (rows, cols) of one layer's matrices: q/o, k/v, gate/up, down
    "1b": [("attn_q", 2048, 2048), ("attn_k", 512, 2048), ("ffn_up", 8192, 2048), ("ffn_down", 2048, 8192)],
    "3b": [("attn_q", 3072, 3072), ("attn_k", 1024, 3072), ("ffn_up", 8192, 3072), ("ffn_down", 3072, 8192)],
}
FORMATS = ("q4_0", "q4_1", "iq4_nl", "q8_0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 128])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=9)
    ap.add_argument("--isa", default=None)
    args = ap.parse_args()
    import llama32_native as l32

    isa = args.isa or l32.system_info()["isa"]
    print(f"isa={isa} threads={args.threads} arch={args.arch} (medians of {args.rounds} interleaved rounds)")
    print(f"{'matrix':9} {'T':>4} {'format':7} {'ms':>8} {'GB/s':>6} {'per byte vs q4_0':>17}")
    for name, rows, cols in SHAPES[args.arch]:
        for T in args.tokens:
            times: dict[str, list[float]] = {f: [] for f in FORMATS}
            for _ in range(args.rounds):
                for f in FORMATS:
                    times[f].append(testing.bench_matmul(isa, f, rows, cols, T, args.iters, args.threads))
            med = {f: statistics.median(v) for f, v in times.items()}
            nbytes = {f: rows * cols // 32 * BLOCK_BYTES[f] for f in FORMATS}
            base = nbytes["q4_0"] / med["q4_0"]
            for f in FORMATS:
                rate = nbytes[f] / med[f]
                print(f"{name:9} {T:>4} {f:7} {med[f] * 1e3:8.3f} {rate / 1e9:6.2f} {rate / base:17.2f}")


if __name__ == "__main__":
    main()
