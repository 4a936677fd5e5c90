"""Synthetic weights of an exact architecture, for benchmarks and tests (speed does not depend on values)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import schema
from ..config import LlamaConfig
from ..memory import Budget, check_memory
from . import GeneratedTensors, Tensor

WEIGHT_STD = 0.02


def _random_blocks(rng: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    """Plain ggml blocks with uniform random codes and a scale that gives values of std ~0.02."""
    nb = cols // 32
    bb = schema.BLOCK_BYTES[kind]
    out = rng.integers(0, 256, size=(rows, nb, bb), dtype=np.uint8)
    if kind == "q8_0":
        out[:, :, 2:] = np.where(out[:, :, 2:] == 128, 129, out[:, :, 2:])  # codes in [-127, 127]
        scale = WEIGHT_STD / 73.0  # std of uniform ints in [-127, 127]
    elif kind == "iq4_nl":
        scale = WEIGHT_STD / 70.0  # std of the 16 grid levels
    else:
        scale = WEIGHT_STD / 4.6  # std of uniform nibbles (minus 8 for q4_0)
    if kind == "q4_1":  # the min centres the nibbles: y = d * q + m, m = -7.5 d
        out[:, :, 2:4] = np.frombuffer(np.float16(-7.5 * scale).tobytes(), dtype=np.uint8)
    out[:, :, 0:2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return out.reshape(rows, nb * bb)


def random_tensors(config: LlamaConfig, plan: Mapping[str, str], seed: int = 0) -> GeneratedTensors:
    """Every tensor of `config` in the format `plan` names for it (f32 for anything unnamed).

    Raises ResourceLimitError before drawing anything when the tensors would not fit in memory.
    """
    specs = schema.tensor_specs(config)
    kinds = {s.name: _kind(plan.get(s.name, "f32"), s.shape) if s.role == schema.MATRIX else "f32" for s in specs}
    check_memory(Budget(sum(schema.data_nbytes(kinds[s.name], s.shape) for s in specs), 0, 0),
                 context=" (none yet: these are the random weights themselves)")
    rng = np.random.default_rng(seed)
    out = GeneratedTensors()
    half_width = WEIGHT_STD * np.sqrt(3.0)  # uniform [-a, a] has std a/sqrt(3)
    for spec in specs:
        kind = kinds[spec.name]
        if spec.role == schema.VECTOR:
            out[spec.name] = Tensor("f32", spec.shape, np.ones(spec.shape, dtype=np.float32))
            continue
        rows, cols = spec.shape
        if kind in schema.BLOCK_BYTES:
            out[spec.name] = Tensor(kind, spec.shape, _random_blocks(rng, rows, cols, kind))
            continue
        values = rng.random((rows, cols), dtype=np.float32) * np.float32(2 * half_width) - np.float32(half_width)
        if kind == "bf16":
            out[spec.name] = Tensor("bf16", spec.shape, (values.view(np.uint32) >> 16).astype(np.uint16))
        else:
            out[spec.name] = Tensor("f32", spec.shape, values)
    return out


def _kind(target: str, shape: tuple[int, ...]) -> str:
    """The kind drawn for a matrix planned as `target` (quantized only when rows are whole blocks)."""
    if target in schema.BLOCK_BYTES:
        return target if shape[1] % schema.QK == 0 else "f32"
    return "bf16" if target == "bf16" else "f32"
