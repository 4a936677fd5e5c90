"""NumPy reference of the weight formats (a test oracle, not shipped in the package): quantizers, dequantizers and the integer dot the kernels compute.

Contract: the C++ quantizers and kernels match these bit for bit. Blocks are ggml's: Q8_0 {f16 d; i8 q[32]};
Q4_0 {f16 d; u8 qs[16]}, byte j = element j (low nibble) and element j+16 (high nibble), y = d * (q - 8);
Q4_1 {f16 d; f16 m; u8 qs[16]}, y = d * q + m; IQ4_NL {f16 d; u8 qs[16]}, y = d * IQ4_GRID[q].
Rounding is half to even everywhere (np.rint), scales are computed in f32. The 4-bit quantizers search the block
scale: for each trial scale of a fixed list they take the codes it gives, fit d (q4_1: d and m) to those codes by
least squares and keep the fit of least squared error; sums over a block run in f32 in the C++ order (_seq_sum).
"""

from __future__ import annotations

import numpy as np

# IQ4_NL's 16 non-linear levels (ggml's kvalues_iq4nl): a 4-bit code indexes this grid.
IQ4_GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
from llama32_native.schema import BLOCK_BYTES  # bytes of one plain block of 32 weights, by kind


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


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """[..., 32] codes 0..15 -> [..., 16] bytes, byte j = code j (low nibble) | code j+16 (high nibble)."""
    return (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).view(np.uint8).reshape(v.shape + (2,))


def _f16_round(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis (32) in f32, in the C++ order: 8 lanes (index mod 8) accumulate in index order, then
    ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    v = a.astype(np.float32).reshape(a.shape[:-1] + (4, 8))
    lanes = v[..., 0, :]
    for j in range(1, 4):
        lanes = (lanes + v[..., j, :]).astype(np.float32)
    pairs = (lanes[..., 0::2] + lanes[..., 1::2]).astype(np.float32)
    quads = (pairs[..., 0::2] + pairs[..., 1::2]).astype(np.float32)
    return (quads[..., 0] + quads[..., 1]).astype(np.float32)


def _signed_max(b: np.ndarray) -> np.ndarray:
    idx = np.abs(b).argmax(axis=-1)
    return np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]


def _search_symmetric(b: np.ndarray, targets: list[np.float32], level) -> tuple[np.ndarray, np.ndarray]:
    """(d, t/m of the winner) per block: codes l = level(x * (t/m)), d = sum(x*l)/sum(l*l), dd = f16(d),
    e = (sxx - 2*(dd*sum(x*l))) + (dd*dd)*sum(l*l); the least e wins, the first of equals."""
    m = _signed_max(b)
    live = m != 0
    safe_m = np.where(live, m, np.float32(1))
    sxx = _seq_sum((b * b).astype(np.float32))
    best_e = np.full(m.shape, np.inf, np.float32)
    best_d = np.zeros(m.shape, np.float32)
    best_is = np.zeros(m.shape, np.float32)
    for t in targets:
        iscale = (t / safe_m).astype(np.float32)
        lv = level((b * iscale[..., None]).astype(np.float32))
        sumlx = _seq_sum((b * lv).astype(np.float32))
        suml2 = _seq_sum((lv * lv).astype(np.float32))
        ok = live & (suml2 > 0)
        d = (sumlx / np.where(ok, suml2, np.float32(1))).astype(np.float32)
        dd = _f16_round(d)
        a = (dd * sumlx).astype(np.float32)
        e = ((sxx - (a + a)).astype(np.float32) + ((dd * dd).astype(np.float32) * suml2).astype(np.float32))
        better = ok & (e.astype(np.float32) < best_e)
        best_e = np.where(better, e, best_e).astype(np.float32)
        best_d = np.where(better, d, best_d)
        best_is = np.where(better, iscale, best_is)
    return best_d, best_is


def _q4_0_level(v: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(v), -8, 7).astype(np.float32)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """[rows, cols] f32 -> uint8 [rows, cols/32*18]: trial targets t = -8.9 .. -7.1 (step 0.2) for the signed max m,
    codes clamp(rint(x * (t/m)), -8, 7) + 8."""
    b = _blocks(x)
    targets = [np.float32(2 * s - 89) / np.float32(10) for s in range(10)]
    d, iscale = _search_symmetric(b, targets, _q4_0_level)
    q = (_q4_0_level((b * iscale[..., None]).astype(np.float32)) + 8).astype(np.uint8)
    out = np.empty(b.shape[:2] + (18,), dtype=np.uint8)
    out[..., :2] = _f16_bytes(d)
    out[..., 2:] = _pack_nibbles(q)
    return out.reshape(x.shape[0], -1)


def _q4_1_level(v: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(v), 0, 15).astype(np.float32)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """[rows, cols] f32 -> uint8 [rows, cols/32*20]: trial targets t = 14.1 .. 15.9 (step 0.2) for the span hi - lo, codes
    clamp(rint((x - lo) * (t/(hi-lo))), 0, 15), (d, m) by least squares; a flat block is d = 0, m = lo."""
    b = _blocks(x)
    f32 = np.float32
    lo, hi = b.min(axis=-1), b.max(axis=-1)
    live = hi > lo
    span = np.where(live, (hi - lo).astype(f32), f32(1))
    sx = _seq_sum(b)
    sxx = _seq_sum((b * b).astype(f32))
    best_e = np.full(lo.shape, np.inf, f32)
    best_d = np.zeros(lo.shape, f32)
    best_m = lo.copy()
    best_is = np.zeros(lo.shape, f32)
    centred = (b - lo[..., None]).astype(f32)
    for s in range(10):
        iscale = ((f32(2 * s + 141) / f32(10)) / span).astype(f32)
        lv = _q4_1_level((centred * iscale[..., None]).astype(f32))
        sl = _seq_sum(lv)
        sll = _seq_sum((lv * lv).astype(f32))
        slx = _seq_sum((lv * b).astype(f32))
        den = ((f32(32) * sll).astype(f32) - (sl * sl).astype(f32)).astype(f32)
        ok = live & (den > 0)
        sden = np.where(ok, den, f32(1))
        d = (((f32(32) * slx).astype(f32) - (sl * sx).astype(f32)).astype(f32) / sden).astype(f32)
        mn = (((sll * sx).astype(f32) - (sl * slx).astype(f32)).astype(f32) / sden).astype(f32)
        dd, mm = _f16_round(d), _f16_round(mn)
        e = (sxx + ((dd * dd).astype(f32) * sll).astype(f32)).astype(f32)
        e = (e + ((mm * mm).astype(f32) * f32(32)).astype(f32)).astype(f32)
        r = (dd * slx).astype(f32)
        e = (e - (r + r)).astype(f32)
        u = (mm * sx).astype(f32)
        e = (e - (u + u)).astype(f32)
        v = ((dd * mm).astype(f32) * sl).astype(f32)
        e = (e + (v + v)).astype(f32)
        better = ok & (e < best_e)
        best_e = np.where(better, e, best_e)
        best_d = np.where(better, d, best_d)
        best_m = np.where(better, mn, best_m)
        best_is = np.where(better, iscale, best_is)
    q = _q4_1_level((centred * best_is[..., None]).astype(f32)).astype(np.uint8)
    out = np.empty(b.shape[:2] + (20,), dtype=np.uint8)
    out[..., 0:2] = _f16_bytes(best_d)
    out[..., 2:4] = _f16_bytes(best_m)
    out[..., 4:] = _pack_nibbles(q)
    return out.reshape(x.shape[0], -1)


# Midpoints between consecutive grid levels: a value goes to the nearest level, a tie to the lower one.
_IQ4_MIDS = ((IQ4_GRID[:-1].astype(np.float32) + IQ4_GRID[1:].astype(np.float32)) / 2).astype(np.float32)


def iq4_nearest(v: np.ndarray) -> np.ndarray:
    """Index of the grid level nearest each f32 value (ties to the lower level)."""
    return np.searchsorted(_IQ4_MIDS, v, side="left").astype(np.uint8)


def quantize_iq4_nl(x: np.ndarray) -> np.ndarray:
    """[rows, cols] f32 -> uint8 [rows, cols/32*18]: trial targets t = -137 .. -117 (step 2) for the signed max m,
    codes the grid level nearest x * (t/m)."""
    b = _blocks(x)
    grid = IQ4_GRID.astype(np.float32)
    d, iscale = _search_symmetric(b, [np.float32(2 * s - 137) for s in range(11)], lambda v: grid[iq4_nearest(v)])
    q = iq4_nearest((b * iscale[..., None]).astype(np.float32))
    out = np.empty(b.shape[:2] + (18,), dtype=np.uint8)
    out[..., 0:2] = _f16_bytes(d)
    out[..., 2:] = _pack_nibbles(q)
    return out.reshape(x.shape[0], -1)


QUANTIZERS = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0, "q4_1": quantize_q4_1, "iq4_nl": quantize_iq4_nl}


def split_blocks(blocks: np.ndarray, kind: str, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Plain blocks [rows, cols/32*bytes] -> (signed values q [rows, nb, 32] int32, d [rows, nb] f32, m or None):
    every kind dequantizes as y = d * q (+ m for q4_1)."""
    rows = blocks.shape[0]
    b = np.ascontiguousarray(blocks).reshape(rows, cols // 32, BLOCK_BYTES[kind])
    d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = None
    if kind == "q8_0":
        return b[..., 2:].view(np.int8).astype(np.int32), d, None
    if kind == "q4_1":
        m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = b[..., -16:]
    codes = np.concatenate([qs & 15, qs >> 4], axis=-1)
    if kind == "q4_0":
        q = codes.astype(np.int32) - 8
    elif kind == "q4_1":
        q = codes.astype(np.int32)
    elif kind == "iq4_nl":
        q = IQ4_GRID[codes].astype(np.int32)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return q, d, m


def dequantize(blocks: np.ndarray, kind: str, cols: int) -> np.ndarray:
    """Plain blocks [rows, cols/32*block] -> f32 [rows, cols]."""
    if kind not in BLOCK_BYTES:
        raise ValueError(f"unknown kind {kind!r}")
    q, d, m = split_blocks(blocks, kind, cols)
    y = q.astype(np.float32) * d[..., None]
    if m is not None:
        y = y + m[..., None]
    return y.reshape(blocks.shape[0], cols).astype(np.float32)


def fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add, rounded once as the hardware rounds it (a*b is exact in f64; the f64 sum is
    rounded to odd, which makes the final rounding to f32 correct)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)  # s + err == p + c exactly (TwoSum)
    even = (s.view(np.int64) & 1) == 0
    fix = (err != 0) & even
    s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def gemm_reference(blocks: np.ndarray, kind: str, cols: int, xq: np.ndarray, xd: np.ndarray,
                   xs: np.ndarray) -> np.ndarray:
    """The q4_1 / iq4_nl kernels' result, bit for bit: y [T, rows] f32 for weights as plain blocks and int8
    activation blocks xq [T, cols], their scales xd and block sums xs [T, nb] (xs = xd * sum(xq), ActRows).

    Per row and block b in order: isum = sum(q * xq) (exact int32), v = f32(isum) * dx (one f32 rounding),
    acc = fma(d, v, acc), then for q4_1 acc = fma(m, xs, acc)."""
    if kind not in ("q4_1", "iq4_nl"):
        raise ValueError(f"gemm_reference covers q4_1 and iq4_nl, not {kind!r}")
    q, d, m = split_blocks(blocks, kind, cols)
    nb = cols // 32
    xb = xq.reshape(xq.shape[0], nb, 32).astype(np.int32)
    isum = np.einsum("rbk,tbk->tbr", q, xb)  # [T, nb, rows], exact in int32 (int64 inside einsum)
    acc = np.zeros((xq.shape[0], blocks.shape[0]), dtype=np.float32)
    for b in range(nb):
        v = isum[:, b, :].astype(np.float32) * xd[:, b, None].astype(np.float32)
        acc = fma_f32(np.broadcast_to(d[None, :, b], acc.shape), v, acc)
        if m is not None:
            acc = fma_f32(np.broadcast_to(m[None, :, b], acc.shape), np.broadcast_to(xs[:, b, None], acc.shape), acc)
    return acc
