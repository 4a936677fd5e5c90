"""NumPy reference quantizers for q8_0 and q4_0: the spec the C++ quantizers match bit for bit.

Blocks are ggml's (Q8_0: f16 d + 32 int8; Q4_0: f16 d + 16 bytes, byte j = element j (low nibble) and
element j+16 (high nibble)). Rounding is half to even everywhere (np.rint), scales are computed in f32.
"""

from __future__ import annotations

import numpy as np


def _blocks(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % 32:
        raise ValueError("expected a [rows, cols] float array with cols a multiple of 32")
    return x.reshape(x.shape[0], -1, 32)


def _f32_recip(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """[rows, cols] f32 -> uint8 [rows, cols/32*34]: d = amax/127, q = rint(x * (1/d))."""
    b = _blocks(x)
    d = (np.abs(b).max(axis=-1) / np.float32(127)).astype(np.float32)
    q = np.rint(b * _f32_recip(d)[..., None]).astype(np.int8)
    out = np.empty(b.shape[:2] + (34,), dtype=np.uint8)
    out[..., :2] = d.astype(np.float16).view(np.uint8).reshape(d.shape + (2,))
    out[..., 2:] = q.view(np.uint8)
    return out.reshape(x.shape[0], -1)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """[rows, cols] f32 -> uint8 [rows, cols/32*18]: d = m / -8 (m: the value of largest |x|, first wins),
    q = clamp(rint(x * (1/d)) + 8, 0, 15)."""
    b = _blocks(x)
    idx = np.abs(b).argmax(axis=-1)
    m = np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]
    d = (m / np.float32(-8)).astype(np.float32)
    q = np.clip(np.rint(b * _f32_recip(d)[..., None]) + 8, 0, 15).astype(np.uint8)
    out = np.empty(b.shape[:2] + (18,), dtype=np.uint8)
    out[..., :2] = d.astype(np.float16).view(np.uint8).reshape(d.shape + (2,))
    out[..., 2:] = q[..., :16] | (q[..., 16:] << 4)
    return out.reshape(x.shape[0], -1)


def dequantize(blocks: np.ndarray, kind: str, cols: int) -> np.ndarray:
    """Plain blocks [rows, cols/32*block] -> f32 [rows, cols]."""
    rows = blocks.shape[0]
    bb = 34 if kind == "q8_0" else 18
    b = np.ascontiguousarray(blocks).reshape(rows, cols // 32, bb)
    d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "q8_0":
        q = b[..., 2:].view(np.int8).astype(np.float32)
    elif kind == "q4_0":
        qs = b[..., 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.float32) - 8
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return (q * d[..., None]).reshape(rows, cols)
