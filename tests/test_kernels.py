"""Every kernel of every ISA the CPU has, against scalar and NumPy float64, on odd sizes (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import numpy as np
import pytest

from llama32_native._core import testing as kernels
from quant_reference import dequantize, quantize_q4_0, quantize_q8_0

# (rows, cols, tokens); quantized weights live in 16-row panels, 8 tokens per kernel call: 33/65/7 rows leave
# partial panels, 9/37/70 tokens a partial tile; 65 x 4128 q8_0 spans several L2 groups of panels per thread;
# f32/bf16 take the float GEMM from 8 tokens on.
SHAPES = [(1, 32, 1), (7, 64, 1), (33, 96, 5), (5, 4128, 3), (65, 160, 9), (3, 2080, 4),
          (33, 96, 37), (65, 4128, 70), (3, 64, 32), (16, 2080, 40),
          (32, 192, 8), (48, 256, 12)]
# f32/bf16 only: widths that are not a multiple of 16 (masked tails of the float GEMM), 8+ tokens
FLOAT_SHAPES = [(5, 100, 9), (7, 37, 13), (9, 1, 8), (6, 17, 64)]
MATMUL_CASES = [(w, *s) for w in ("f32", "bf16", "q8_0", "q4_0") for s in SHAPES] + [
    (w, *s) for w in ("f32", "bf16") for s in FLOAT_SHAPES]


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum() / max((b**2).sum(), 1e-30))


def _acts_f64(isa: str, x: np.ndarray) -> np.ndarray:
    """The int8 activation blocks the kernels multiply, dequantized in float64."""
    out = []
    for row in x:
        q, d, _ = kernels.kernel_quantize_act(isa, row)
        out.append(q.reshape(-1, 32).astype(np.float64) * d.astype(np.float64)[:, None])
    return np.stack([o.reshape(-1) for o in out])


@pytest.mark.parametrize("wtype,rows,cols,T", MATMUL_CASES)
def test_matmul_against_numpy_f64(isa, wtype, rows, cols, T):
    rng = np.random.default_rng(rows * 1000 + cols + T)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((T, cols)).astype(np.float32)
    for _ in range(3):  # re-execution: the same result every time
        y = kernels.kernel_matmul(isa, "f32", w, rows, cols, wtype, x)
        if wtype == "f32":
            ref = x.astype(np.float64) @ w.T.astype(np.float64)
            assert nmse(y, ref) < 1e-10
        elif wtype == "bf16":
            wb = (w.view(np.uint32) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1)) >> 16 << 16  # RNE to bf16
            ref = x.astype(np.float64) @ wb.view(np.float32).T.astype(np.float64)
            assert nmse(y, ref) < 1e-10
        else:
            blocks = quantize_q8_0(w) if wtype == "q8_0" else quantize_q4_0(w)
            wq = dequantize(blocks, wtype, cols).astype(np.float64)
            ref = _acts_f64(isa, x) @ wq.T
            assert nmse(y, ref) < 1e-9  # exact integer dots; only f32 scale products round
            # and the quantized product stays near the float one
            full = x.astype(np.float64) @ w.T.astype(np.float64)
            assert nmse(y, full) < (1e-3 if wtype == "q8_0" else 2e-2)


@pytest.mark.parametrize("wtype,rows,cols,T", MATMUL_CASES)
def test_matmul_isa_equals_scalar(isa, wtype, rows, cols, T):
    rng = np.random.default_rng(7 + rows + cols)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((T, cols)).astype(np.float32)
    y = kernels.kernel_matmul(isa, "f32", w, rows, cols, wtype, x)
    ref = kernels.kernel_matmul("scalar", "f32", w, rows, cols, wtype, x)
    assert nmse(y, ref) < 1e-10


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_weight_quantizers_bit_exact_with_numpy(kind):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 96)).astype(np.float32) * rng.uniform(0.01, 10, (9, 1)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block
    x[1, :32] = np.arange(32, dtype=np.float32) - 16.0  # exact halves under the scale
    x[2, 5] = -x[2, :32].__abs__().max() * 2  # a negative extreme
    ref = quantize_q8_0(x) if kind == "q8_0" else quantize_q4_0(x)
    got = kernels.quantize(kind, x)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_plain_blocks_survive_the_engine_layout(kind):
    """Blocks loaded as-is (GGUF Q8_0/Q4_0) multiply exactly like the engine's own quantization."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 128)).astype(np.float32)
    x = rng.standard_normal((2, 128)).astype(np.float32)
    blocks = quantize_q8_0(w) if kind == "q8_0" else quantize_q4_0(w)
    a = kernels.kernel_matmul("scalar", kind, blocks, 20, 128, kind, x)
    b = kernels.kernel_matmul("scalar", "f32", w, 20, 128, kind, x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n", [32, 64, 96, 4096, 4128])
def test_activation_quantizer_bit_exact_across_isas(isa, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.uniform(0.001, 100)).astype(np.float32)
    x[:32] = 0.0
    q, d, s = kernels.kernel_quantize_act(isa, x)
    q0, d0, s0 = kernels.kernel_quantize_act("scalar", x)
    np.testing.assert_array_equal(q, q0)
    np.testing.assert_array_equal(d, d0)
    np.testing.assert_array_equal(s, s0)
    # and it is the q8_0 rule, with f32 scales
    blocks = x.reshape(-1, 32)
    dref = (np.abs(blocks).max(axis=1) / np.float32(127)).astype(np.float32)
    np.testing.assert_array_equal(d, dref)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000])
def test_silu_mul_against_numpy_f64(isa, n):
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 8).astype(np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    g[:4] = np.array([0.0, -0.0, 100.0, -100.0], np.float32)[: min(4, n)]
    h = kernels.kernel_silu_mul(isa, g, u)
    g64 = g.astype(np.float64)
    ref = g64 / (1.0 + np.exp(-g64)) * u
    np.testing.assert_allclose(h, ref, rtol=2e-6, atol=1e-30)
    if n > 1:  # a NaN gate stays NaN, the other lanes are untouched
        g[1] = np.nan
        h = kernels.kernel_silu_mul(isa, g, u)
        assert np.isnan(h[1]) and np.isfinite(np.delete(h, 1)).all()


def _attention_f64(q, limit, keys, values):
    hd = q.shape[1]
    out = np.zeros(q.shape)
    for u in range(q.shape[0]):
        s = keys[: limit[u]] @ q[u] / np.sqrt(hd)
        p = np.exp(s - s.max())
        out[u] = (p / p.sum()) @ values[: limit[u]]
    return out


def _stored_f64(x: np.ndarray, kv: str) -> np.ndarray:
    """What a KV cache of type kv holds for rows x, in float64."""
    if kv == "f32":
        return x.astype(np.float64)
    if kv == "f16":
        return x.astype(np.float16).astype(np.float64)
    return dequantize(quantize_q8_0(x), "q8_0", x.shape[1]).astype(np.float64)


# (queries, head_dim, keys): one key, partial K tiles, exactly one key block (128), several blocks with a partial
# last one, a query group of 3 (GQA 24/8) and of 96 (a prefill tile), head_dim 64/128 and one not a multiple of 16
ATTEND_CASES = [(1, 64, 1), (3, 128, 17), (4, 64, 128), (5, 128, 300), (96, 128, 161), (7, 32, 129), (2, 48, 40)]


@pytest.mark.parametrize("kv,nq,hd,L", [(kv, *c) for kv in ("f32", "f16", "q8_0") for c in ATTEND_CASES
                                        if kv != "q8_0" or c[1] % 32 == 0])
def test_attend(isa, kv, nq, hd, L):
    rng = np.random.default_rng(nq * 1000 + L)
    q = rng.standard_normal((nq, hd)).astype(np.float32) * 2
    keys = rng.standard_normal((L, hd)).astype(np.float32)
    values = rng.standard_normal((L, hd)).astype(np.float32)
    # causal limits as in a prompt tile, plus the first and last key
    limit = np.clip(L - np.arange(nq)[::-1] * 37, 1, L).astype(np.int32)
    limit[0] = 1
    out = kernels.kernel_attend(isa, kv, q, limit, keys, values)
    ref = _attention_f64(q.astype(np.float64), limit, _stored_f64(keys, kv), _stored_f64(values, kv))
    assert np.isfinite(out).all()  # slots past the last key hold NaN patterns; none may leak
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
    if isa != "scalar":
        np.testing.assert_allclose(out, kernels.kernel_attend("scalar", kv, q, limit, keys, values), rtol=2e-5, atol=2e-5)


def test_attend_rejects_bad_input():
    q = np.zeros((2, 64), np.float32)
    kv = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="limit out of range"):
        kernels.kernel_attend("scalar", "f16", q, np.array([0, 4], np.int32), kv, kv)
    with pytest.raises(ValueError, match="kv_type"):
        kernels.kernel_attend("scalar", "q4_0", q, np.array([1, 4], np.int32), kv, kv)


def test_forcing_an_unknown_isa_is_an_error():
    with pytest.raises(ValueError, match="unknown ISA"):
        kernels.kernel_quantize_act("sse9", np.zeros(32, np.float32))
