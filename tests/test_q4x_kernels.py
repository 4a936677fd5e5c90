"""q4_1 and iq4_nl end to end in the engine: quantizers, panel layout and every ISA's kernel, bit for bit against the
NumPy reference (quant.py); decode (1 row), batched decode and prefill tile shapes (docs/FORMATS.md)."""

from __future__ import annotations

import numpy as np
import pytest
from llama32_native._core import testing as kernels
from quant_reference import QUANTIZERS, dequantize, gemm_reference

KINDS = ("q4_1", "iq4_nl")
# (rows, cols, tokens): partial panels (1, 7, 33, 65 rows), one and two panels a call, 1 token (decode), 3-8
# (batched decode), 9-70 (prefill tiles with a partial last tile); 65 x 4128 spans several L2 groups a thread
SHAPES = [(1, 32, 1), (7, 64, 1), (33, 96, 5), (5, 4128, 3), (65, 160, 9), (3, 2080, 4), (33, 96, 37),
          (65, 4128, 70), (16, 2080, 40), (32, 192, 8), (48, 256, 12), (64, 1024, 4)]


def _acts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The int8 activation blocks the engine makes of x (bit-exact across ISAs): xq, xd, xs."""
    rows = [kernels.kernel_quantize_act("scalar", r) for r in x]
    return tuple(np.stack([r[i] for r in rows]) for i in range(3))  # type: ignore[return-value]


def _weights(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * rng.uniform(0.01, 2, (rows, 1)).astype(np.float32)
    w[0, :32] = 0.0  # a zero block
    w[-1, -32:] += 5.0  # a block far from zero: q4_1's min carries it
    return w


@pytest.mark.parametrize("kind", KINDS)
def test_quantizer_bit_exact_with_numpy(kind):
    w = _weights(9, 160, 1)
    w[1, :32] = 0.5  # a constant block
    w[2, :32] = np.arange(32, dtype=np.float32) - 16  # values exactly between levels
    np.testing.assert_array_equal(kernels.quantize(kind, w), QUANTIZERS[kind](w))


@pytest.mark.parametrize("kind,rows,cols,T", [(k, *s) for k in KINDS for s in SHAPES])
def test_gemm_bit_exact_with_numpy_reference(isa, kind, rows, cols, T):
    rng = np.random.default_rng(rows * 1000 + cols + T)
    w = _weights(rows, cols, rows + cols)
    x = rng.standard_normal((T, cols)).astype(np.float32)
    if cols > 32:
        x[0, :32] = 0.0  # an all-zero activation block
    blocks = QUANTIZERS[kind](w)
    ref = gemm_reference(blocks, kind, cols, *_acts(x))
    for _ in range(2):  # the same bits every time
        y = kernels.kernel_matmul(isa, kind, blocks, rows, cols, kind, x)
        np.testing.assert_array_equal(y, ref)
    # and close to the float product of the dequantized weights
    full = x.astype(np.float64) @ dequantize(blocks, kind, cols).astype(np.float64).T
    assert float(((y - full) ** 2).sum() / (full**2).sum()) < 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_plain_blocks_survive_the_panel_layout(kind):
    """Blocks loaded as they are (a GGUF's) multiply exactly like the engine's own quantization of the values."""
    w = _weights(20, 128, 3)
    x = np.random.default_rng(4).standard_normal((2, 128)).astype(np.float32)
    blocks = QUANTIZERS[kind](w)
    a = kernels.kernel_matmul("scalar", kind, blocks, 20, 128, kind, x)
    b = kernels.kernel_matmul("scalar", "f32", w, 20, 128, kind, x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("src", KINDS)
@pytest.mark.parametrize("target", ["f32", "q8_0", "q4_0"])
def test_conversion_from_the_new_kinds(src, target):
    """A q4_1/iq4_nl tensor loaded as another type goes through its exact f32 values."""
    w = _weights(17, 96, 5)
    blocks = QUANTIZERS[src](w)
    values = dequantize(blocks, src, 96)
    x = np.random.default_rng(6).standard_normal((3, 96)).astype(np.float32)
    a = kernels.kernel_matmul("scalar", src, blocks, 17, 96, target, x)
    b = kernels.kernel_matmul("scalar", "f32", values, 17, 96, target, x)
    np.testing.assert_array_equal(a, b)


def test_wrong_block_bytes_rejected():
    with pytest.raises(ValueError, match="bytes"):
        kernels.kernel_matmul("scalar", "q4_1", np.zeros((2, 18), np.uint8), 2, 32, "q4_1",
                              np.zeros((1, 32), np.float32))
