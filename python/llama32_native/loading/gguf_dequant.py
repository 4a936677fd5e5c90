"""Vectorized NumPy dequantizers for the GGUF block formats (docs/FORMATS.md, "GGUF").

Contract: each `dequant_<type>(raw)` takes the raw bytes of whole blocks (uint8, any shape whose
size is a multiple of the block size) and returns float32 values in file order, one block's
elements after another. `dequantize(raw, type_name, n_elements)` dispatches by type name and
works through large tensors in chunks so temporaries stay bounded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# ggml type id -> (name, elements per block, bytes per block); ggml.h / gguf-py constants, the one table of them.
# Ids 4, 5, 31-33 and 36-38 were removed from ggml and are rejected like unknown ids.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}
# type name -> (elements per block, bytes per block), for the names dequantize() reads.
_DEQUANTIZED_NAMES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
BLOCK_LAYOUT: dict[str, tuple[int, int]] = {
    name: (elems, nbytes) for name, elems, nbytes in GGML_TYPES.values() if name in _DEQUANTIZED_NAMES
}

# Blocks per chunk in dequantize(): bounds the int/float temporaries to a few MiB.
_CHUNK_BLOCKS = 1 << 14


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    """View `raw` as [n_blocks, block_bytes] uint8 (no copy when already contiguous)."""
    flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if flat.size % block_bytes != 0:
        raise ValueError(f"{flat.size} bytes is not a whole number of {block_bytes}-byte blocks")
    return flat.reshape(-1, block_bytes)


def f16_field(b: np.ndarray, start: int) -> np.ndarray:
    """The little-endian fp16 field at byte `start` of every block, as float32 [n, 1]."""
    return np.ascontiguousarray(b[:, start : start + 2]).view("<f2").astype(np.float32)


def _nibbles_j_j16(qs: np.ndarray) -> np.ndarray:
    """16 bytes -> 32 values: byte j holds element j (low nibble) and j+16 (high nibble)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _bits_u32(qh: np.ndarray) -> np.ndarray:
    """4 bytes (little-endian u32) per block -> its 32 bits [n, 32], bit j at column j."""
    h = np.ascontiguousarray(qh).view("<u4")
    return ((h >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


# ---------------------------------------------------------------------------- 32-element blocks
def dequant_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 {f16 d; u8 qs[16]}: y = d * (q - 8)."""
    b = _blocks(raw, 18)
    q = _nibbles_j_j16(b[:, 2:18]).astype(np.int8) - np.int8(8)
    return (f16_field(b, 0) * q.astype(np.float32)).reshape(-1)


def dequant_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 {f16 d; f16 m; u8 qs[16]}: y = d * q + m."""
    b = _blocks(raw, 20)
    q = _nibbles_j_j16(b[:, 4:20]).astype(np.float32)
    return (f16_field(b, 0) * q + f16_field(b, 2)).reshape(-1)


def dequant_q5_0(raw: np.ndarray) -> np.ndarray:
    """Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: y = d * ((nibble | bit << 4) - 16)."""
    b = _blocks(raw, 22)
    q = (_nibbles_j_j16(b[:, 6:22]) | (_bits_u32(b[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
    return (f16_field(b, 0) * q.astype(np.float32)).reshape(-1)


def dequant_q5_1(raw: np.ndarray) -> np.ndarray:
    """Q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: y = d * (nibble | bit << 4) + m."""
    b = _blocks(raw, 24)
    q = (_nibbles_j_j16(b[:, 8:24]) | (_bits_u32(b[:, 4:8]) << 4)).astype(np.float32)
    return (f16_field(b, 0) * q + f16_field(b, 2)).reshape(-1)


def dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 {f16 d; i8 qs[32]}: y = d * q."""
    b = _blocks(raw, 34)
    q = b[:, 2:34].view(np.int8).astype(np.float32)
    return (f16_field(b, 0) * q).reshape(-1)


# ---------------------------------------------------------------------------- 256-element K blocks
def k_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12 scale bytes of Q4_K/Q5_K into 8 six-bit scales and 8 mins, each [n, 8]."""
    lo_sc = s[:, 0:4] & 63
    lo_m = s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    hi_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    sc = np.concatenate([lo_sc, hi_sc], axis=1).astype(np.float32)
    m = np.concatenate([lo_m, hi_m], axis=1).astype(np.float32)
    return sc, m


def k_nibbles(qs: np.ndarray) -> np.ndarray:
    """128 bytes -> [n, 8, 32]: chunk c's 32 bytes give sub-block 2c (low) and 2c+1 (high)."""
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, 8, 32)


def dequant_q4_k(raw: np.ndarray) -> np.ndarray:
    """Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: y = d*sc_j*q - dmin*m_j."""
    b = _blocks(raw, 144)
    sc, m = k_scales_mins(b[:, 4:16])
    scale = (f16_field(b, 0) * sc)[:, :, None]
    offset = (f16_field(b, 2) * m)[:, :, None]
    q = k_nibbles(b[:, 16:144]).astype(np.float32)
    return (scale * q - offset).reshape(-1)


def dequant_q5_k(raw: np.ndarray) -> np.ndarray:
    """Q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: high bit j of qh[l]."""
    b = _blocks(raw, 176)
    sc, m = k_scales_mins(b[:, 4:16])
    scale = (f16_field(b, 0) * sc)[:, :, None]
    offset = (f16_field(b, 2) * m)[:, :, None]
    # sub-block j takes bit j of every qh byte as its fifth bit
    hbit = (b[:, None, 16:48] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = (k_nibbles(b[:, 48:176]) | (hbit << 4)).astype(np.float32)
    return (scale * q - offset).reshape(-1)


def dequant_q6_k(raw: np.ndarray) -> np.ndarray:
    """Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} — d is the LAST field."""
    b = _blocks(raw, 210)
    # two halves of 128 outputs; each half's 64 ql bytes form quarters
    # [lo(ql[0:32]), lo(ql[32:64]), hi(ql[0:32]), hi(ql[32:64])]
    ql = b[:, 0:128].reshape(-1, 2, 1, 2, 32)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(-1, 2, 4, 32)
    # quarter k of a half takes bits 2k..2k+1 of that half's 32 qh bytes
    qh = b[:, 128:192].reshape(-1, 2, 1, 32)
    high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    q = ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(np.float32)
    # output i uses scale i // 16, so the 16 scales run in order over 16-element groups
    scale = f16_field(b, 208) * b[:, 192:208].view(np.int8).astype(np.float32)
    return (scale[:, :, None] * q.reshape(-1, 16, 16)).reshape(-1)


# ---------------------------------------------------------------------------- plain floats
def dequant_f32(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f4").astype(np.float32)


def dequant_f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f2").astype(np.float32)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16, any shape) -> float32 of the same shape (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def dequant_bf16(raw: np.ndarray) -> np.ndarray:
    return bf16_to_f32(np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<u2"))


DEQUANTIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": dequant_f32,
    "F16": dequant_f16,
    "BF16": dequant_bf16,
    "Q4_0": dequant_q4_0,
    "Q4_1": dequant_q4_1,
    "Q5_0": dequant_q5_0,
    "Q5_1": dequant_q5_1,
    "Q8_0": dequant_q8_0,
    "Q4_K": dequant_q4_k,
    "Q5_K": dequant_q5_k,
    "Q6_K": dequant_q6_k,
}


def dequantize(raw: np.ndarray, type_name: str, n_elements: int | None = None) -> np.ndarray:
    """Raw GGUF tensor bytes of `type_name` -> flat float32 array.

    `n_elements`, when given, must match the byte count exactly (whole blocks, no slack).
    """
    try:
        fn = DEQUANTIZERS[type_name]
    except KeyError:
        raise ValueError(f"no dequantizer for GGUF type {type_name!r}; known: {sorted(DEQUANTIZERS)}") from None
    block_elems, block_bytes = BLOCK_LAYOUT[type_name]
    flat = np.asarray(raw).reshape(-1).view(np.uint8)
    if flat.size % block_bytes != 0:
        raise ValueError(f"{type_name}: {flat.size} bytes is not a whole number of {block_bytes}-byte blocks")
    n_blocks = flat.size // block_bytes
    if n_elements is not None and n_elements != n_blocks * block_elems:
        raise ValueError(f"{type_name}: {flat.size} bytes hold {n_blocks * block_elems} elements, not {n_elements}")
    out = np.empty(n_blocks * block_elems, dtype=np.float32)
    step = _CHUNK_BLOCKS if block_elems > 1 else _CHUNK_BLOCKS * 32
    for first in range(0, n_blocks, step):
        last = min(n_blocks, first + step)
        out[first * block_elems : last * block_elems] = fn(flat[first * block_bytes : last * block_bytes])
    return out


__all__ = ["BLOCK_LAYOUT", "DEQUANTIZERS", "GGML_TYPES", "dequantize", "bf16_to_f32"] + [
    f"dequant_{name.lower()}" for name in DEQUANTIZERS
]
