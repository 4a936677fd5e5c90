"""GGUF round trip at the real Llama 3.2 shapes: the same synthetic weights as a Hugging Face checkpoint and as a
GGUF written by llama.cpp's own converter (q/k rows permuted to its interleaved RoPE layout, llama3 scaling as
`rope_freqs.weight`) must give the same logits through our two loaders.

    python bench/gguf_roundtrip.py --arch 1b [3b] [--qtype BF16 Q8_0 Q4_0] [--tokens 48]

BF16 is lossless in both files, so the logits must agree to rounding. For Q8_0/Q4_0 the GGUF's blocks are used
as they are, and llama.cpp's quantizer rounds ties away from zero where ours rounds them to even (docs/FORMATS.md), so
the check is on the weights: every element of every matrix must be equal or one quantization step apart (a
tie), and such elements must be rare. (Logits are printed too; a random 16-layer network amplifies those rare
one-step differences, so they are not the criterion.)
Needs the cached checkpoints of `bench/synthetic_checkpoint.py` (made on first use; llama-cpp-python for the
converter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_checkpoint as sc

QUANT_OF = {"BF16": "bf16", "Q8_0": "q8_0", "Q4_0": "q4_0"}


def compare_weights(a, b) -> str:
    """Elements of every quantized matrix: equal, or one step of their block apart (a rounding tie)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the NumPy reference of the formats
    from llama32_native.schema import matrix_names
    from quant_reference import dequantize

    n = n_diff = 0
    worst = 0.0
    for name in matrix_names(a.config):
        kind, wa = a.tensor_data(name)
        kind_b, wb = b.tensor_data(name)
        assert kind == kind_b, (name, kind, kind_b)
        wa, wb = np.asarray(wa), np.asarray(wb)
        bb = 34 if kind == "q8_0" else 18
        cols = wa.shape[1] // bb * 32
        da, db = dequantize(wa, kind, cols), dequantize(wb, kind, cols)
        step = np.repeat(np.abs(wa.reshape(wa.shape[0], -1, bb)[..., :2].copy().view(np.float16)[..., 0]
                                .astype(np.float32)), 32, axis=1)
        d = np.abs(da - db)
        n += d.size
        n_diff += int((d > 0).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(d > 0, d / step, 0.0)
        worst = max(worst, float(ratio.max()))
    verdict = "OK" if worst <= 1.0 + 1e-3 and n_diff <= 5e-3 * n else "BAD"
    return f"{verdict}: weights differ in {n_diff}/{n} elements ({100 * n_diff / n:.4f}%), at most {worst:.3f} step"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["1b"], choices=["1b", "3b"])
    ap.add_argument("--qtype", nargs="+", default=["BF16", "Q8_0"], choices=sorted(QUANT_OF))
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    from llama32_native import Model

    ok = True
    rng = np.random.default_rng(0)
    for arch in a.arch:
        hf = sc.ensure_hf_checkpoint(arch, 0)
        ids = [128000] + [int(x) for x in rng.integers(0, 128000, a.tokens - 1)]
        for qtype in a.qtype:
            quant = QUANT_OF[qtype]
            gguf = sc.ensure_gguf(arch, 0, qtype)
            if qtype == "Q4_0":  # llama.cpp's Q4_0 keeps the tied table at Q6_K; Q4_0_E8 keeps it at Q8_0, like us
                gguf = sc.ensure_gguf(arch, 0, "Q4_0_E8")
            ma = Model.from_pretrained(hf, quant=quant, threads=a.threads, context_length=a.tokens + 8)
            mb = Model.from_pretrained(gguf, quant=quant, threads=a.threads, context_length=a.tokens + 8)
            with ma, mb:
                want, got = ma.logits(ids), mb.logits(ids)
                weights = "" if quant == "bf16" else compare_weights(ma, mb)
            diff = float(np.abs(got - want).max())
            scale = float(np.abs(want).max())
            same_top = float((got.argmax(-1) == want.argmax(-1)).mean())
            if quant == "bf16":
                good = diff <= 1e-3 * max(scale, 1.0) and same_top == 1.0
            else:
                good = weights.startswith("OK")
            ok &= good
            print(f"{arch} {qtype:<7} (ours: {quant}) max|dlogit|={diff:.3g} (max |logit| {scale:.3g}) "
                  f"argmax agree={100 * same_top:.1f}% over {a.tokens} positions {weights} "
                  f"{'PASS' if good else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
