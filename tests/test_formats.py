"""The NumPy reference of the weight formats (quant.py): q4_1 and iq4_nl blocks, the exact f32 FMA, the kernel spec."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
from llama32_native.quant import (
    IQ4_GRID,
    QUANTIZERS,
    dequantize,
    fma_f32,
    gemm_reference,
    iq4_nearest,
    quantize_iq4_nl,
    quantize_q4_1,
    split_blocks,
)

gguf = pytest.importorskip("gguf")


def weights(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32) * rng.uniform(0.01, 3, (rows, 1)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block
    if rows > 1:
        x[1, :32] = 0.25  # a constant block (q4_1: d = 0)
    return x


@pytest.mark.parametrize("kind,gtype", [("q4_1", "Q4_1"), ("iq4_nl", "IQ4_NL"), ("q4_0", "Q4_0"), ("q8_0", "Q8_0")])
def test_dequantize_matches_gguf(kind, gtype):
    x = weights(7, 256, 1)
    blocks = QUANTIZERS[kind](x)
    want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[gtype])
    np.testing.assert_array_equal(dequantize(blocks, kind, 256), want)


def test_q4_1_error_within_half_a_step():
    x = weights(9, 512, 2)
    blocks = quantize_q4_1(x)
    y = dequantize(blocks, "q4_1", 512)
    _, d, m = split_blocks(blocks, "q4_1", 512)
    err = np.abs(y - x).reshape(9, -1, 32).max(axis=-1)
    # half a step, plus what rounding d and the min to f16 moves (15 steps of d's rounding and m's)
    slack = 16 * np.spacing(np.abs(d).astype(np.float16)).astype(np.float32) + np.spacing(np.abs(m).astype(np.float16))
    assert (err <= d / 2 + slack + 1e-6).all()
    assert np.all(y[1, :32] == np.float32(0.25))


def test_iq4_nl_picks_the_nearest_level():
    x = weights(9, 512, 3)
    blocks = quantize_iq4_nl(x)
    q, d, _ = split_blocks(blocks, "iq4_nl", 512)
    v = x.reshape(9, -1, 32) / np.where(d == 0, 1, d.astype(np.float32))[..., None]
    nearest = np.abs(v[..., None] - IQ4_GRID.astype(np.float32)).min(axis=-1)
    got = np.abs(v - q)
    assert np.all(got <= nearest + 1e-3)
    # the block's largest magnitude lands on the -127 level (d = m / -127)
    assert np.all(q.min(axis=-1)[d != 0] == -127)
    # ties go to the lower level
    mids = (IQ4_GRID[:-1].astype(np.float32) + IQ4_GRID[1:]) / 2
    np.testing.assert_array_equal(iq4_nearest(mids), np.arange(15))
    np.testing.assert_array_equal(iq4_nearest(np.array([-1000, 1000], np.float32)), [0, 15])


def test_fma_f32_is_the_hardware_fma():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.fmaf.restype = ctypes.c_float
    libm.fmaf.argtypes = [ctypes.c_float] * 3
    rng = np.random.default_rng(4)
    n = 5000
    a = (rng.standard_normal(n) * rng.uniform(1e-3, 1e3, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    c = (rng.standard_normal(n) * 100).astype(np.float32)
    c[::3] = -(a[::3] * b[::3])  # near-cancellation: the case a separate multiply and add get wrong
    got = fma_f32(a, b, c)
    want = np.array([libm.fmaf(float(p), float(q), float(s)) for p, q, s in zip(a, b, c)], dtype=np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert (((a * b) + c) != want).any()  # so the test can tell a fused result from an unfused one


@pytest.mark.parametrize("kind", ["q4_1", "iq4_nl"])
def test_gemm_reference_is_the_dequantized_product(kind):
    rows, cols, T = 19, 160, 3
    w = weights(rows, cols, 5)
    rng = np.random.default_rng(6)
    xq = rng.integers(-127, 128, size=(T, cols)).astype(np.int8)
    xd = rng.uniform(1e-3, 1e-1, size=(T, cols // 32)).astype(np.float32)
    xs = (xd * xq.reshape(T, -1, 32).astype(np.int32).sum(axis=-1)).astype(np.float32)
    blocks = QUANTIZERS[kind](w)
    y = gemm_reference(blocks, kind, cols, xq, xd, xs)
    x64 = (xq.reshape(T, -1, 32) * xd[..., None].astype(np.float64)).reshape(T, cols)
    ref = x64 @ dequantize(blocks, kind, cols).astype(np.float64).T
    assert y.dtype == np.float32 and y.shape == (T, rows)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
