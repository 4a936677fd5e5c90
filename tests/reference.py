"""A small NumPy Llama forward in float64 (docs/MODEL.md, "Forward pass"): the always-there oracle for the C++ engine.

Weights use the package's internal names and the half-split (Hugging Face) RoPE layout.
"""

from __future__ import annotations

import numpy as np

from llama32_native.config import LlamaConfig


def rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    return g * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope(x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """x: [T, heads, hd] rotated at positions pos [T], half-split pairs (i, i + hd/2)."""
    # angles as the engine and Hugging Face form them: f32 position times f32 frequency
    phi = (pos.astype(np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]).astype(np.float64)
    c, s = np.cos(phi)[:, None, :], np.sin(phi)[:, None, :]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def forward(cfg: LlamaConfig, w: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Logits [T, n_vocab] for a fresh sequence at positions 0..T-1."""
    f = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    T = len(tokens)
    hd, H, K = cfg.head_dim, cfg.n_head, cfg.n_head_kv
    G = H // K
    pos = np.arange(T)
    inv_freq = cfg.rope_inv_freq()
    h = f["tok_embd"][np.asarray(tokens)]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        x = rmsnorm(h, f[p + "attn_norm"], cfg.rms_eps)
        q = (x @ f[p + "attn_q"].T).reshape(T, H, hd)
        k = (x @ f[p + "attn_k"].T).reshape(T, K, hd)
        v = (x @ f[p + "attn_v"].T).reshape(T, K, hd)
        q, k = rope(q, pos, inv_freq), rope(k, pos, inv_freq)
        out = np.empty((T, H, hd))
        for a in range(H):
            b = a // G  # query head a uses KV head floor(a / G)
            s = q[:, a, :] @ k[:, b, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, a, :] = s @ v[:, b, :]
        h = h + out.reshape(T, H * hd) @ f[p + "attn_output"].T
        x = rmsnorm(h, f[p + "ffn_norm"], cfg.rms_eps)
        g = x @ f[p + "ffn_gate"].T
        h = h + (g / (1.0 + np.exp(-g)) * (x @ f[p + "ffn_up"].T)) @ f[p + "ffn_down"].T
    h = rmsnorm(h, f["output_norm"], cfg.rms_eps)
    out_w = f["output"] if "output" in f else f["tok_embd"]
    return h @ out_w.T


def random_weights(cfg: LlamaConfig, seed: int = 0, tied: bool = True) -> dict[str, np.ndarray]:
    """Normal(0, 0.05) f32 weights (norms around 1) under internal names."""
    rng = np.random.default_rng(seed)
    c = cfg

    def m(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    def g() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(c.n_embd)).astype(np.float32)

    w = {"tok_embd": m(c.n_vocab, c.n_embd), "output_norm": g()}
    if not tied:
        w["output"] = m(c.n_vocab, c.n_embd)
    for i in range(c.n_layer):
        p = f"blk.{i}."
        w.update({
            p + "attn_norm": g(), p + "ffn_norm": g(),
            p + "attn_q": m(c.q_dim, c.n_embd), p + "attn_k": m(c.kv_dim, c.n_embd),
            p + "attn_v": m(c.kv_dim, c.n_embd), p + "attn_output": m(c.n_embd, c.q_dim),
            p + "ffn_gate": m(c.n_ff, c.n_embd), p + "ffn_up": m(c.n_ff, c.n_embd),
            p + "ffn_down": m(c.n_embd, c.n_ff),
        })
    return w
