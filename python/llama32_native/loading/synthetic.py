"""Synthetic weights of an exact architecture, for benchmarks and tests (speed does not depend on values)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..config import LlamaConfig
from . import BLOCK_BYTES, Tensor

WEIGHT_STD = 0.02


def _random_blocks(rng: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    """Plain ggml blocks with uniform random codes and a scale that gives values of std ~0.02."""
    nb = cols // 32
    bb = BLOCK_BYTES[kind]
    out = rng.integers(0, 256, size=(rows, nb, bb), dtype=np.uint8)
    if kind == "q8_0":
        out[:, :, 2:] = np.where(out[:, :, 2:] == 128, 129, out[:, :, 2:])  # codes in [-127, 127]
        scale = WEIGHT_STD / 73.0  # std of uniform ints in [-127, 127]
    else:
        scale = WEIGHT_STD / 4.6  # std of uniform nibbles minus 8
    out[:, :, 0:2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return out.reshape(rows, nb * bb)


class GeneratedTensors(dict[str, Tensor]):
    """Tensors that exist only to be loaded: a Model empties this dict as the engine takes each one, so random
    f32 weights are never held twice (the 3B in f32 is 12.9 GB: two copies would not fit in 24 GiB)."""


def random_tensors(config: LlamaConfig, plan: Mapping[str, str], seed: int = 0) -> GeneratedTensors:
    """Every tensor of `config` in the format `plan` names for it (f32 for anything unnamed)."""
    from ..model import matrix_names, vector_names

    rng = np.random.default_rng(seed)
    c = config
    shapes = {
        "tok_embd": (c.n_vocab, c.n_embd),
        "output": (c.n_vocab, c.n_embd),
    }
    for i in range(c.n_layer):
        shapes.update({
            f"blk.{i}.attn_q": (c.q_dim, c.n_embd),
            f"blk.{i}.attn_k": (c.kv_dim, c.n_embd),
            f"blk.{i}.attn_v": (c.kv_dim, c.n_embd),
            f"blk.{i}.attn_output": (c.n_embd, c.q_dim),
            f"blk.{i}.ffn_gate": (c.n_ff, c.n_embd),
            f"blk.{i}.ffn_up": (c.n_ff, c.n_embd),
            f"blk.{i}.ffn_down": (c.n_embd, c.n_ff),
        })
    out = GeneratedTensors()
    half_width = WEIGHT_STD * np.sqrt(3.0)  # uniform [-a, a] has std a/sqrt(3)
    for name in matrix_names(c):
        rows, cols = shapes[name]
        kind = plan.get(name, "f32")
        if kind in BLOCK_BYTES and cols % 32 == 0:
            out[name] = Tensor(kind, (rows, cols), _random_blocks(rng, rows, cols, kind))
            continue
        values = rng.random((rows, cols), dtype=np.float32) * np.float32(2 * half_width) - np.float32(half_width)
        if kind == "bf16":
            out[name] = Tensor("bf16", (rows, cols), (values.view(np.uint32) >> 16).astype(np.uint16))
        else:
            out[name] = Tensor("f32", (rows, cols), values)
    for name in vector_names(c):
        out[name] = Tensor("f32", (c.n_embd,), np.ones(c.n_embd, dtype=np.float32))
    return out
