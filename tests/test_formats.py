"""The NumPy reference of the weight formats (quant.py): q4_1 and iq4_nl blocks, the exact f32 FMA, the kernel spec."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
from quant_reference import (
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


def test_iq4_nl_grid_and_ties():
    x = weights(9, 512, 3)
    q, d, _ = split_blocks(quantize_iq4_nl(x), "iq4_nl", 512)
    assert set(np.unique(q)) <= set(IQ4_GRID.tolist())
    # the block's largest magnitude lands on an outer level (its trial targets are -137 .. -117)
    assert np.all(q.min(axis=-1)[d != 0] == -127)
    # ties go to the lower level
    mids = (IQ4_GRID[:-1].astype(np.float32) + IQ4_GRID[1:]) / 2
    np.testing.assert_array_equal(iq4_nearest(mids), np.arange(15))
    np.testing.assert_array_equal(iq4_nearest(np.array([-1000, 1000], np.float32)), [0, 15])


def _max_based(x: np.ndarray, kind: str) -> np.ndarray:
    """The plain quantizers the search replaced (scale from the block's extremes), dequantized."""
    b = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    if kind == "q4_1":
        lo, hi = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
        d = ((hi - lo) / np.float32(15)).astype(np.float16).astype(np.float32)
        q = np.clip(np.rint((b - lo) / np.where(hi > lo, (hi - lo) / 15, 1)), 0, 15)
        y = q * d + lo.astype(np.float16).astype(np.float32)
    else:
        m = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1)
        top = -8.0 if kind == "q4_0" else -127.0
        d = (m / np.float32(top)).astype(np.float16).astype(np.float32)
        v = b / np.where(d == 0, 1, d)
        y = d * (np.clip(np.rint(v), -8, 7) if kind == "q4_0" else IQ4_GRID[iq4_nearest(v.astype(np.float32))])
    return y.reshape(x.shape)


@pytest.mark.parametrize("kind", ["q4_0", "q4_1", "iq4_nl"])
def test_scale_search_beats_the_block_extremes(kind):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 1024)) * 0.02 * np.exp(0.3 * rng.standard_normal((64, 1024)))).astype(np.float32)
    y = dequantize(QUANTIZERS[kind](x), kind, 1024)
    err = ((y - x) ** 2).reshape(64, -1, 32).sum(-1)
    base = ((_max_based(x, kind) - x) ** 2).reshape(64, -1, 32).sum(-1)
    assert err.sum() < 0.93 * base.sum()  # about 10% (q4_0, iq4_nl) to 20% (q4_1) less squared error
    # the extremes' scale is one of the trials (up to its rounding), so no block gets much worse
    assert (err <= base * 1.05 + 1e-12).mean() > 0.99


def test_q4_1_special_blocks():
    x = weights(3, 64, 2)
    x[2, :32] = np.arange(32, dtype=np.float32)  # 32 distinct values over 15 steps
    blocks = quantize_q4_1(x)
    y = dequantize(blocks, "q4_1", 64)
    assert np.all(y[0, :32] == 0) and np.all(y[1, :32] == np.float32(0.25))  # zero and flat blocks exact
    _, d, m = split_blocks(blocks, "q4_1", 64)
    assert abs(float(d[2, 0]) - 31 / 15) < 0.1 and abs(float(m[2, 0])) < 1
    assert np.abs(y[2, :32] - x[2, :32]).max() <= float(d[2, 0])


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
