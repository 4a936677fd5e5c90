"""Logprobs in OpenAI's shapes, and their validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

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
