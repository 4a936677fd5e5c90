"""The whole forward against the NumPy reference, on tiny random configs, every ISA and weight format."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import llama32_native as l32
from conftest import ISAS, as_tensors, tiny_config
from reference import forward as ref_forward
from reference import random_weights

CONFIGS = {
    "gqa": dict(),
    "mha": dict(n_head_kv=4),
    "gqa3": dict(n_head=6, n_head_kv=2, n_embd=96),
    "untied": dict(tie_word_embeddings=False),
    "noscale": dict(rope_scaling=None),
    "hd32": dict(n_embd=128, head_dim=32),  # head_dim a multiple of 32: the q8_0 KV cache applies
}


def _model(name: str, quant: str = "f32", **kw) -> tuple[l32.Model, dict, l32.LlamaConfig]:
    cfg = tiny_config(**CONFIGS[name])
    w = random_weights(cfg, seed=1, tied=cfg.tie_word_embeddings)
    kw.setdefault("kv_cache", "f32")
    return l32.Model(cfg, as_tensors(w), quant=quant, threads=2, context_length=256, **kw), w, cfg


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_matches_reference_f32(name):
    model, w, cfg = _model(name)
    ids = list(np.random.default_rng(0).integers(0, cfg.n_vocab, 37))
    got = model.logits(ids)
    ref = ref_forward(cfg, w, ids)
    assert got.shape == (37, cfg.n_vocab) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0)


@pytest.mark.parametrize("kv", ["f32", "f16", "q8_0"])
def test_incremental_decode_equals_batched(kv):
    """Feeding a prompt at once, or in chunks, or token by token gives the same logits (the KV cache)."""
    model, _, cfg = _model("hd32" if kv == "q8_0" else "gqa", kv_cache=kv)
    ids = list(np.random.default_rng(3).integers(0, cfg.n_vocab, 20))
    full = model.logits(ids)
    with model.session() as s:
        s.feed(ids[:7])
        s.feed(ids[7:12])
        steps = [s.feed([t]) for t in ids[12:]]
        assert s.n_past == 20
    tol = 1e-5 if kv == "f32" else 2e-3
    for k, lg in enumerate(steps):
        np.testing.assert_allclose(lg, full[12 + k], atol=tol)


@pytest.mark.parametrize("kv,nmse_max", [("f16", 1e-6), ("q8_0", 1e-4)])
def test_reduced_kv_cache_close_to_reference(kv, nmse_max):
    """Over a prompt longer than one attention key block (128), the f16/q8_0 caches stay close to the f32 math."""
    model, w, cfg = _model("hd32", kv_cache=kv)
    ids = list(np.random.default_rng(6).integers(0, cfg.n_vocab, 200))
    got = model.logits(ids)
    ref = ref_forward(cfg, w, ids)
    assert float(((got - ref) ** 2).sum() / (ref**2).sum()) < nmse_max
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.95


def test_q8_0_kv_cache_needs_head_dim_multiple_of_32():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="q8_0 needs head_dim to be a multiple of 32"):
        l32.Model(cfg, as_tensors(random_weights(cfg, seed=1)), quant="f32", kv_cache="q8_0", context_length=16)


@pytest.mark.parametrize("quant,tol", [("bf16", 2e-2), ("q8_0", 5e-2), ("q4_0", 0.35)])
def test_quantized_forward_close_to_reference(quant, tol):
    model, w, cfg = _model("gqa", quant=quant)
    ids = list(np.random.default_rng(5).integers(0, cfg.n_vocab, 16))
    got = model.logits(ids)
    ref = ref_forward(cfg, w, ids)
    nmse = float(((got - ref) ** 2).sum() / (ref**2).sum())
    assert nmse < {"bf16": 1e-4, "q8_0": 1e-3, "q4_0": 3e-2}[quant]
    assert np.abs(got - ref).max() < tol


def test_long_positions_use_llama3_scaling():
    """Positions past original_max_position_embeddings (scaled band) agree with the reference."""
    cfg = tiny_config()
    w = random_weights(cfg, seed=2)
    model = l32.Model(cfg, as_tensors(w), quant="f32", threads=2, context_length=16384, kv_cache="f32")
    rng = np.random.default_rng(1)
    ids = list(rng.integers(0, cfg.n_vocab, 9000))
    got = model.logits(ids)
    ref_tail = ref_forward(cfg, w, ids)[-4:]
    np.testing.assert_allclose(got[-4:], ref_tail, atol=5e-4)


def test_sequences_in_one_batch_are_independent():
    model, _, cfg = _model("gqa")
    a = [5, 9, 14, 2, 200]
    b = [7, 7, 100]
    la, lb = model.logits(a), model.logits(b)
    s1, s2 = model.session(), model.session()
    pos = np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int32)
    seq = np.array([s1._slot] * 5 + [s2._slot] * 3, np.int32)
    out = model._forward(np.array(a + b, np.int32), pos, seq, np.array([4, 7], np.int32))
    np.testing.assert_allclose(out[0], la[-1], atol=1e-5)
    np.testing.assert_allclose(out[1], lb[-1], atol=1e-5)
    s1.close()
    s2.close()


@pytest.mark.parametrize("forced", ISAS)
def test_forced_isa_gives_same_logits(forced, tmp_path):
    """LLAMA32_NATIVE_ISA selects the kernels at import; every ISA matches the reference."""
    code = (
        "import sys, numpy as np; sys.path.insert(0, %r)\n"
        "import llama32_native as l32\n"
        "from conftest import tiny_config, as_tensors\n"
        "from reference import random_weights, forward\n"
        "assert l32.system_info()['isa'] == %r\n"
        "cfg = tiny_config(); w = random_weights(cfg, seed=4)\n"
        "for q, tol in (('f32', 2e-4), ('q8_0', 0.05)):\n"
        "    m = l32.Model(cfg, as_tensors(w), quant=q, threads=2, context_length=64, kv_cache='f32')\n"
        "    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 201, 202]\n"
        "    assert np.abs(m.logits(ids) - forward(cfg, w, ids)).max() < tol, q\n"
        "long = [int(i) for i in np.random.default_rng(6).integers(0, cfg.n_vocab, 75)]\n"  # 3 attention tiles
        "m = l32.Model(cfg, as_tensors(w), quant='f32', threads=2, context_length=128, kv_cache='f16')\n"
        "assert np.abs(m.logits(long) - forward(cfg, w, long)).max() < 2e-3\n"
        "print('ok')\n"
    ) % (os.path.dirname(__file__), forced)
    env = dict(os.environ, LLAMA32_NATIVE_ISA=forced)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_unknown_forced_isa_fails_clearly():
    env = dict(os.environ, LLAMA32_NATIVE_ISA="avx9000")
    r = subprocess.run([sys.executable, "-c", "import llama32_native"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "unknown ISA 'avx9000'" in r.stderr


def test_system_info_contract():
    info = l32.system_info()
    for key in ("isa", "available_isas", "threads", "openmp"):
        assert key in info
    assert info["isa"] in info["available_isas"] and info["available_isas"][-1] == "scalar"
    assert info["openmp"] is True and info["threads"] >= 1
