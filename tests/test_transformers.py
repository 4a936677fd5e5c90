"""Parity with Hugging Face transformers' LlamaForCausalLM on tiny random checkpoints it saved itself.

f32 logits within 1e-4 at every position (positions past original_max_position_embeddings included, so the
llama3 scaling is exercised), GQA and MHA, tied and untied heads; greedy tokens identical. CI installs torch
(`pip install torch==2.13.0`, a CPU wheel) so these run there; elsewhere they skip when torch is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import llama32_native as l32  # noqa: E402

CASES = {
    "gqa_tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mha_untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    "gqa3_untied": dict(num_attention_heads=6, num_key_value_heads=2, hidden_size=96, tie_word_embeddings=False),
}


def _save_hf(tmp_path, **kw):
    cfg = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               max_position_embeddings=16384, rope_theta=500000.0, rms_norm_eps=1e-5,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
               bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    cfg.update(kw)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval().float()
    with torch.no_grad():  # norms away from 1 so a swapped norm weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(tmp_path, case):
    hf = _save_hf(tmp_path, **CASES[case])
    ours = l32.Model.from_pretrained(tmp_path, quant="f32", kv_cache="f32", threads=2, context_length=1024)
    assert ours.config.tie_word_embeddings == CASES[case]["tie_word_embeddings"]
    ids = list(np.random.default_rng(0).integers(0, 320, 300))  # past the 256 of original_max_position
    got, ref = ours.logits(ids), _hf_logits(hf, ids)
    err = float(np.abs(got - ref).max())
    print(f"{case}: max |dlogit| = {err:.2e}")
    assert err < 1e-4


def test_logits_far_positions_match_transformers(tmp_path):
    """Positions past 8192 (the real Llama 3.2 original context): the scaled RoPE bands at work."""
    hf = _save_hf(tmp_path, num_hidden_layers=1,
                  rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    ours = l32.Model.from_pretrained(tmp_path, quant="f32", kv_cache="f32", threads=2, context_length=8400)
    ids = list(np.random.default_rng(1).integers(0, 320, 8300))
    got, ref = ours.logits(ids), _hf_logits(hf, ids)
    err = float(np.abs(got[8150:] - ref[8150:]).max())
    print(f"positions 8150-8299: max |dlogit| = {err:.2e}")
    assert err < 1e-4


def test_greedy_tokens_match_transformers(tmp_path):
    hf = _save_hf(tmp_path, **CASES["gqa_tied"])
    ours = l32.Model.from_pretrained(tmp_path, quant="f32", kv_cache="f32", threads=2, context_length=512)
    prompt = [1, 17, 99, 250, 3]
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0].tolist()[len(prompt):]
    s = ours.session()
    logits = s.feed(prompt)
    mine = []
    for _ in range(64):
        tok = int(np.argmax(logits))
        mine.append(tok)
        logits = s.feed([tok])
    assert mine == out


def test_bf16_checkpoint_loads_like_transformers(tmp_path):
    hf = _save_hf(tmp_path, **CASES["gqa_tied"])
    hf.to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    ours = l32.Model.from_pretrained(tmp_path, quant="bf16", kv_cache="f32", threads=2, context_length=128)
    ids = list(range(3, 60))
    ref = _hf_logits(hf.float(), ids)  # the same bf16 values, computed in f32
    assert float(np.abs(ours.logits(ids) - ref).max()) < 1e-4
