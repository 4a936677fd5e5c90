"""The error contract, driven through the public API: every exception a user can get is an l32.Error.

Each case calls one public entry point (Model.random, from_pretrained, generate, stream, chat, generate_batch,
logits, Session, Tokenizer, LlamaConfig) with a bad input and checks the type of what it raises: an l32.Error
subclass, and for an argument at fault also a ValueError (InvalidArgumentError) or TypeError
(InvalidArgumentTypeError), so `except ValueError` keeps working (docs/ERRORS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from llama32_native import Error, LlamaConfig, Model
from llama32_native.errors import (
    ConfigError,
    ContextLengthError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelClosedError,
    ModelLoadError,
    ModelNotFoundError,
    NoFreeSlotError,
    UnknownTokenError,
)
from llama32_native.tokenizer import GPT2_PATTERN, Tokenizer

TINY = LlamaConfig(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=300, n_ctx=512,
                   bos_token_id=256, eos_token_ids=(257,))


def _tokenizer() -> Tokenizer:
    pieces: list[bytes | None] = [bytes([b]) for b in range(256)] + [None] * 44
    specials = {"<|im_start|>": 256, "<|im_end|>": 257, "<|endoftext|>": 258}
    return Tokenizer.from_vocab(pieces, specials, GPT2_PATTERN, None, 258, n_vocab=300, add_bos=False)


@pytest.fixture(scope="module")
def model() -> Any:
    m = Model.random(TINY, quant="f32", threads=1, context_length=64, max_sequences=3, tokenizer=_tokenizer())
    yield m
    m.close()


@pytest.fixture(scope="module")
def bare() -> Any:
    """A model without a tokenizer."""
    m = Model.random(TINY, quant="f32", threads=1, context_length=64)
    yield m
    m.close()


# (id, call on (model, bare model, tmp_path), expected class)
Case = tuple[str, Callable[[Any, Any, Path], Any], type[BaseException]]

CASES: list[Any] = [
    # --- construction
    ("random-unknown-preset", lambda m, b, t: Model.random("llama-9b"), InvalidArgumentError),
    ("random-preset-not-str", lambda m, b, t: LlamaConfig.preset(["x"]), InvalidArgumentTypeError),
    pytest.param("random-config-int", lambda m, b, t: Model.random(5), InvalidArgumentTypeError),
    pytest.param("random-bad-quant", lambda m, b, t: Model.random(TINY, quant="q5"), InvalidArgumentError),
    pytest.param("random-threads-zero", lambda m, b, t: Model.random(TINY, threads=0), InvalidArgumentError),
    pytest.param("random-threads-str", lambda m, b, t: Model.random(TINY, threads="2"), InvalidArgumentTypeError),
    ("random-kv-q8-small-head", lambda m, b, t: Model.random(TINY, quant="f32", kv_cache="q8_0"),
     InvalidArgumentError),
    ("random-context-too-long", lambda m, b, t: Model.random(TINY, quant="f32", context_length=10**6),
     InvalidArgumentError),
    ("config-negative-dim", lambda m, b, t: LlamaConfig(n_embd=-1, n_layer=1, n_head=1, n_head_kv=1, n_ff=1,
                                                          n_vocab=1), ConfigError),
    ("config-eps", lambda m, b, t: LlamaConfig(n_embd=64, n_layer=1, n_head=1, n_head_kv=1, n_ff=1, n_vocab=1,
                                                 rms_eps=1e-50), ConfigError),
    # --- files
    ("load-missing", lambda m, b, t: Model.from_pretrained(t / "nope"), ModelNotFoundError),
    ("load-text-as-gguf", lambda m, b, t: Model.from_pretrained(_write(t / "x.gguf", b"hello\n")), ModelLoadError),
    ("load-empty-dir", lambda m, b, t: Model.from_pretrained(t), ModelLoadError),
    ("load-pickle", lambda m, b, t: Model.from_pretrained(_write(t / "m.pth", b"\x80\x04")), ModelLoadError),
    ("load-garbage-safetensors", lambda m, b, t: Model.from_pretrained(_write(t / "m.safetensors", bytes(64))),
     ModelLoadError),
    pytest.param("load-bad-quant-arg", lambda m, b, t: Model.from_pretrained(t / "nope", quant="q9"),
                 InvalidArgumentError),
    # --- sampling arguments
    ("generate-temperature", lambda m, b, t: m.generate([1, 2], temperature=-1), InvalidArgumentError),
    ("generate-top-p-nan", lambda m, b, t: m.generate([1, 2], top_p=float("nan")), InvalidArgumentError),
    ("generate-max-new-str", lambda m, b, t: m.generate([1, 2], max_new_tokens="5"), InvalidArgumentTypeError),
    ("generate-unknown-param", lambda m, b, t: m.generate([1, 2], tempreature=1.0), InvalidArgumentTypeError),
    ("generate-stop-int", lambda m, b, t: m.generate([1, 2], stop=5), InvalidArgumentTypeError),
    ("stream-top-k", lambda m, b, t: m.stream([1, 2], top_k=-1), InvalidArgumentError),
    ("batch-seed", lambda m, b, t: m.generate_batch([[1], [2]], seed=-3), InvalidArgumentError),
    ("generate-context", lambda m, b, t: m.generate([1] * 60, max_new_tokens=10), ContextLengthError),
    # --- prompts and ids
    ("generate-text-without-tokenizer", lambda m, b, t: b.generate("hi", max_new_tokens=1), Error),
    pytest.param("generate-empty", lambda m, b, t: m.generate([], max_new_tokens=1), InvalidArgumentError),
    pytest.param("generate-id-range", lambda m, b, t: m.generate([10**6], max_new_tokens=1), InvalidArgumentError),
    pytest.param("generate-id-float", lambda m, b, t: m.generate([1.5], max_new_tokens=1), InvalidArgumentTypeError),
    pytest.param("logits-empty", lambda m, b, t: m.logits([]), InvalidArgumentError),
    pytest.param("batch-not-a-list", lambda m, b, t: m.generate_batch("abc"), InvalidArgumentTypeError),
    ("generate-lone-surrogate", lambda m, b, t: m.generate("\ud800", max_new_tokens=1), InvalidArgumentError),
    pytest.param("generate-bytes", lambda m, b, t: m.generate(b"hi", max_new_tokens=1), InvalidArgumentTypeError),
    # --- chat
    ("chat-not-a-list", lambda m, b, t: m.chat("hello"), InvalidArgumentTypeError),
    ("chat-empty", lambda m, b, t: m.chat([]), InvalidArgumentError),
    ("chat-bad-role", lambda m, b, t: m.chat([{"role": "robot", "content": "x"}]), InvalidArgumentError),
    ("chat-content-int", lambda m, b, t: m.chat([{"role": "user", "content": 5}]), InvalidArgumentTypeError),
    ("chat-without-format", lambda m, b, t: b.chat([{"role": "user", "content": "x"}]), Error),
    # --- sessions and slots
    ("session-after-close", lambda m, b, t: _closed_session(m).feed([1]), ModelClosedError),
    pytest.param("session-empty-feed", lambda m, b, t: _with_session(m, lambda s: s.feed([])),
                 InvalidArgumentError),
    pytest.param("session-prefix-empty", lambda m, b, t: _with_session(m, lambda s: s.feed_reusing_prefix([])),
                 InvalidArgumentError),
    pytest.param("slots-exhausted", lambda m, b, t: _exhaust(m), NoFreeSlotError),
    pytest.param("threads-setter", lambda m, b, t: setattr(m, "threads", 0), InvalidArgumentError),
    ("closed-model", lambda m, b, t: _closed_model().generate([1], max_new_tokens=1), ModelClosedError),
    # --- tokenizer
    ("tokenizer-encode-int", lambda m, b, t: m.tokenizer.encode(5), InvalidArgumentTypeError),
    ("tokenizer-decode-range", lambda m, b, t: m.tokenizer.decode([10**6]), InvalidArgumentError),
    ("tokenizer-decode-str", lambda m, b, t: m.tokenizer.decode("abc"), InvalidArgumentTypeError),
    ("tokenizer-decode-not-iterable", lambda m, b, t: m.tokenizer.decode(3.5), InvalidArgumentTypeError),
    ("tokenizer-token-bytes", lambda m, b, t: m.tokenizer.token_bytes(-1), InvalidArgumentError),
    ("tokenizer-unknown-special", lambda m, b, t: m.tokenizer.special("<|nope|>"), UnknownTokenError),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _closed_session(m: Any) -> Any:
    s = m.session()
    s.close()
    return s


def _with_session(m: Any, fn: Callable[[Any], Any]) -> Any:
    with m.session() as s:
        return fn(s)


def _exhaust(m: Any) -> None:
    sessions = []
    try:
        for _ in range(10):
            sessions.append(m.session())
    finally:
        for s in sessions:
            s.close()


def _closed_model() -> Any:
    m = Model.random(TINY, quant="f32", threads=1, context_length=16)
    m.close()
    return m


def _case_id(c: Any) -> str:
    return c.values[0] if hasattr(c, "values") else c[0]


@pytest.mark.parametrize("name,call,expected", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_raises_the_documented_error(model: Any, bare: Any, tmp_path: Path, name: str,
                                               call: Callable[[Any, Any, Path], Any],
                                               expected: type[BaseException]) -> None:
    try:
        out = call(model, bare, tmp_path)
        if hasattr(out, "__next__"):  # a stream: its first chunk runs the validation that is not up front
            next(out)
    except BaseException as e:  # noqa: BLE001 - checking exactly what escapes
        assert isinstance(e, Error), f"{name}: {type(e).__module__}.{type(e).__qualname__}: {e}"
        assert isinstance(e, expected), f"{name}: expected {expected.__name__}, got {type(e).__name__}: {e}"
        if issubclass(expected, InvalidArgumentError):
            assert isinstance(e, ValueError)
        if issubclass(expected, InvalidArgumentTypeError):
            assert isinstance(e, TypeError)
        if issubclass(expected, UnknownTokenError):
            assert isinstance(e, KeyError)  # a lookup, as before
        return
    pytest.fail(f"{name}: nothing was raised")


def test_the_model_still_works_after_every_bad_call(model: Any) -> None:
    """Invalid input changes no state: after the cases above, generation is as before."""
    a = model.generate([1, 2, 3], max_new_tokens=4, do_sample=False)
    b = model.generate([1, 2, 3], max_new_tokens=4, do_sample=False)
    assert a == b
