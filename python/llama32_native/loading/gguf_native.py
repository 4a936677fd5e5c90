"""GGUF block types -> the engine's own weight formats, without a second rounding where the engine can avoid it.

Contract (docs/FORMATS.md): `native_kind(type)` names the in-memory kind a GGUF matrix keeps by default and
`to_native(raw, type, rows, cols)` returns its data as plain blocks of that kind ([rows, cols/32*bytes] uint8):
  Q4_0, Q8_0, Q4_1, IQ4_NL  -> kept bit for bit (q4_0, q8_0, q4_1, iq4_nl);
  Q4_K                      -> q4_1: each 32-weight sub-block keeps its codes; its scale d*sc and min -dmin*m
                               (a 6-bit integer times an f16) are stored as their f16 rounding;
  Q5_0                      -> q8_0 exactly (codes q - 16 fit int8 under the same scale);
  Q5_1, Q5_K, Q6_K          -> q8_0 requantized from the exact values against the stored f16 scale: error at
                               most half a step of the 8-bit code;
  F32, BF16, F16            -> themselves (the engine holds an f16 matrix as f32, exactly).
Large tensors are converted in row chunks so temporaries stay small.
"""

from __future__ import annotations

import numpy as np

from ..schema import BLOCK_BYTES
from .gguf_dequant import dequantize, f16_field, k_nibbles, k_scales_mins

# GGUF type name -> the kind a loader hands over (loading.Tensor.kind), which the engine keeps
NATIVE_KIND = {
    "F32": "f32", "F16": "f16", "BF16": "bf16",
    "Q4_0": "q4_0", "Q8_0": "q8_0", "Q4_1": "q4_1", "IQ4_NL": "iq4_nl",
    "Q4_K": "q4_1",
    "Q5_0": "q8_0", "Q5_1": "q8_0", "Q5_K": "q8_0", "Q6_K": "q8_0",
}
# Kinds the file holds bit for bit in our blocks (no conversion at all)
_VERBATIM = {"Q4_0", "Q8_0", "Q4_1", "IQ4_NL"}
# GGUF block bytes and elements, for the chunking below
_GGUF_BLOCK = {"Q4_K": (256, 144), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q5_K": (256, 176), "Q6_K": (256, 210)}
_CHUNK_ELEMENTS = 1 << 21  # about 8 MiB of f32 temporaries per chunk


def native_kind(type_name: str) -> str | None:
    """The engine kind a GGUF matrix of this type keeps by default; None when the engine cannot hold it."""
    return NATIVE_KIND.get(type_name)


def is_exact(type_name: str) -> bool:
    """Whether the default kind holds the file's values exactly (Q4_K's f16 scale products aside)."""
    return type_name in _VERBATIM or type_name in ("F32", "F16", "BF16", "Q5_0")


def q4_k_to_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_K super-blocks (144 bytes, 256 weights) -> 8 q4_1 blocks each (20 bytes: f16 d, f16 m, 16 code bytes).

    Sub-block j of a super-block: y = (d * sc_j) * q - (dmin * m_j), q = 0..15; as q4_1, d' = f16(d * sc_j),
    m' = f16(-(dmin * m_j)), the same codes (the products are exact in f32: 11 x 6 bits)."""
    b = np.ascontiguousarray(raw).reshape(-1, 144)
    sc, m = k_scales_mins(b[:, 4:16])
    scale = (f16_field(b, 0) * sc).astype(np.float16)  # [n, 8]
    offset = (-(f16_field(b, 2) * m)).astype(np.float16)
    q = k_nibbles(b[:, 16:144])  # [n, 8, 32], element order
    out = np.empty((b.shape[0], 8, 20), dtype=np.uint8)
    out[..., 0:2] = scale.view(np.uint8).reshape(scale.shape + (2,))
    out[..., 2:4] = offset.view(np.uint8).reshape(offset.shape + (2,))
    out[..., 4:] = q[..., :16] | (q[..., 16:] << 4)
    return out.reshape(-1)


def q5_0_to_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q5_0 (22 bytes: f16 d, u32 high bits, 16 nibble bytes) -> q8_0 with the same d and codes q - 16, exactly."""
    b = np.ascontiguousarray(raw).reshape(-1, 22)
    lo = np.concatenate([b[:, 6:22] & 0x0F, b[:, 6:22] >> 4], axis=1)
    hi = ((np.ascontiguousarray(b[:, 2:6]).view("<u4") >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    out = np.empty((b.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = b[:, 0:2]
    out[:, 2:] = ((lo | (hi << 4)).astype(np.int16) - 16).astype(np.int8).view(np.uint8)
    return out.reshape(-1)


def requantize_q8_0(values: np.ndarray) -> np.ndarray:
    """f32 values (a multiple of 32) -> q8_0 blocks whose codes are chosen against the stored f16 scale: d is
    amax/127 rounded *up* to an f16, q = clamp(rint(x / d), -127, 127), so every error is at most d/2, also where
    the scale is an f16 subnormal."""
    b = values.reshape(-1, 32).astype(np.float32)
    want = np.abs(b).max(axis=1) / np.float32(127)
    d = want.astype(np.float16)
    low = d.astype(np.float32) < want
    d[low] = np.nextafter(d[low], np.float16(np.inf))
    d32 = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d32[:, None] > 0, np.rint(b / np.where(d32 > 0, d32, 1)[:, None]), 0)
    out = np.empty((b.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    out[:, 2:] = np.clip(q, -127, 127).astype(np.int8).view(np.uint8)
    return out.reshape(-1)


def _convert_chunk(raw: np.ndarray, type_name: str) -> np.ndarray:
    if type_name == "Q4_K":
        return q4_k_to_q4_1(raw)
    if type_name == "Q5_0":
        return q5_0_to_q8_0(raw)
    return requantize_q8_0(dequantize(raw, type_name))


def to_native(raw: np.ndarray, type_name: str, rows: int, cols: int) -> tuple[str, np.ndarray]:
    """(kind, data) of a GGUF matrix [rows, cols] in its default engine kind (see the module contract).

    Block kinds come back as plain blocks [rows, cols/32*BLOCK_BYTES[kind]] (a view of `raw` when verbatim);
    float kinds as [rows, cols] views (f32, f16, or bf16 bits as uint16)."""
    kind = NATIVE_KIND.get(type_name)
    if kind is None:
        raise ValueError(f"GGUF type {type_name} has no engine format")
    flat = np.asarray(raw).reshape(-1).view(np.uint8)
    if type_name in _VERBATIM:
        return kind, flat.reshape(rows, cols // 32 * BLOCK_BYTES[kind])
    if type_name == "F32":
        return kind, flat.view("<f4").reshape(rows, cols)
    if type_name == "BF16":
        return kind, flat.view("<u2").reshape(rows, cols)
    if type_name == "F16":
        return kind, flat.view("<f2").reshape(rows, cols)
    elems, nbytes = _GGUF_BLOCK[type_name]
    out = np.empty(rows * (cols // 32) * BLOCK_BYTES[kind], dtype=np.uint8)
    step = max(1, _CHUNK_ELEMENTS // elems)  # blocks per chunk
    n_blocks = flat.size // nbytes
    per_block_out = elems // 32 * BLOCK_BYTES[kind]
    for first in range(0, n_blocks, step):
        last = min(n_blocks, first + step)
        out[first * per_block_out : last * per_block_out] = _convert_chunk(flat[first * nbytes : last * nbytes], type_name)
    return kind, out.reshape(rows, -1)


__all__ = ["NATIVE_KIND", "is_exact", "native_kind", "q4_k_to_q4_1", "q5_0_to_q8_0", "requantize_q8_0", "to_native"]
