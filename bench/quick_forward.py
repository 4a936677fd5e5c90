"""A quick whole-model timing for A/B runs of two builds: prefill of 512 tokens (best of 3), 30 batch-8 decode
steps and 30 single decode steps of a synthetic model, as one JSON line (tokens/s).

Interleave the builds on a shared machine, e.g.:
    for i in 1 2 3; do PYTHONPATH=/tmp/old/python python bench/quick_forward.py; PYTHONPATH=python python bench/quick_forward.py; done
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from llama32_native import Model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama-3.2-3b")
    ap.add_argument("--quant", default="q4_0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    m = Model.random(args.arch, quant=args.quant, threads=args.threads, context_length=1024, max_sequences=8)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 128000, 512).astype(np.int32)
    prefill = []
    for _ in range(3):
        t = time.perf_counter()
        m._forward(toks, np.arange(512, dtype=np.int32), np.zeros(512, np.int32), np.array([511], np.int32))
        prefill.append(512 / (time.perf_counter() - t))
    batch = 8
    for s in range(batch):  # a 64-token prompt per sequence, then one decode row per sequence and step
        m._forward(toks[:64], np.arange(64, dtype=np.int32), np.full(64, s, np.int32), np.array([63], np.int32))
    t = time.perf_counter()
    for step in range(30):
        m._forward(rng.integers(0, 128000, batch).astype(np.int32), np.full(batch, 64 + step, np.int32),
                   np.arange(batch, dtype=np.int32), np.arange(batch, dtype=np.int32))
    b8 = 30 * batch / (time.perf_counter() - t)
    t = time.perf_counter()
    for step in range(30):
        m._forward(rng.integers(0, 128000, 1).astype(np.int32), np.array([94 + step], np.int32),
                   np.zeros(1, np.int32), np.zeros(1, np.int32))
    b1 = 30 / (time.perf_counter() - t)
    print(json.dumps({"prefill": round(max(prefill), 1), "batch8": round(b8, 1), "batch1": round(b1, 2)}))


if __name__ == "__main__":
    main()
