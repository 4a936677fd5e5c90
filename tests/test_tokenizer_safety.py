"""Tokenizer data from files is validated before tiktoken sees it, and tiktoken's panics never escape.

Contract under test (docs/ERRORS.md): duplicate ids, two specials on one id, a special on a base token's id, empty,
non-compiling, empty-matching or catastrophically backtracking pre-tokenizer patterns raise TokenizerError at load;
a pyo3 PanicException from tiktoken at encode time becomes TokenizerError; KeyboardInterrupt and SystemExit pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llama32_native import tokenizer as tk
from llama32_native.errors import Error, InvalidArgumentError, InvalidArgumentTypeError, TokenizerError
from llama32_native.pattern import check_pattern, nested_quantifier
from llama32_native.tokenizer import Tokenizer, byte_level_from_bytes

MERGES = [b"he", b"ll", b"lo", b"hello", b" w", b"or", b"ld", b" world"]
SPECIALS = {"<|endoftext|>": 264, "<|im_start|>": 265, "<|im_end|>": 266}


def _pieces() -> list[bytes | None]:
    return [bytes([b]) for b in range(256)] + MERGES + [None, None, None]


def _tokenizer_json(tmp_path: Path, *, vocab: dict[str, int] | None = None, regex: Any = tk.GPT2_PATTERN,
                    added: list[dict[str, Any]] | None = None) -> Path:
    if vocab is None:
        vocab = {byte_level_from_bytes(p): i for i, p in enumerate(_pieces()) if p is not None}
    if added is None:
        added = [{"id": i, "content": name, "special": True} for name, i in SPECIALS.items()]
    doc = {
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "added_tokens": added,
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc))
    return path


def test_good_tokenizer_json_round_trips(tmp_path: Path) -> None:
    tok = Tokenizer.from_tokenizer_json(_tokenizer_json(tmp_path))
    ids = tok.encode("hello world", bos=False)
    assert tok.decode(ids) == "hello world" and 259 in ids  # "hello" merged


def test_duplicate_ids_in_vocab_are_refused(tmp_path: Path) -> None:
    vocab = {byte_level_from_bytes(p): i for i, p in enumerate(_pieces()) if p is not None}
    vocab[byte_level_from_bytes(b"xyz")] = 257  # a second token on id 257 (tiktoken panicked on this)
    with pytest.raises(TokenizerError, match="given to two tokens"):
        Tokenizer.from_tokenizer_json(_tokenizer_json(tmp_path, vocab=vocab))


def test_two_specials_on_one_id_are_refused(tmp_path: Path) -> None:
    added = [{"id": 264, "content": "<|a|>"}, {"id": 264, "content": "<|b|>"}]
    with pytest.raises(TokenizerError, match="share an id"):
        Tokenizer.from_tokenizer_json(_tokenizer_json(tmp_path, added=added))


@pytest.mark.parametrize("tid", [-1, 10**6, "5", True, 2.0])
def test_special_with_a_bad_id_is_refused(tid: Any) -> None:
    with pytest.raises(TokenizerError, match="bad id"):
        Tokenizer.from_vocab(_pieces(), {"<|x|>": tid}, tk.GPT2_PATTERN, None, None, n_vocab=300)


def test_special_over_a_base_token_wins() -> None:
    """A special placed on a base token's id replaces that token (GGUF control tokens): never two meanings."""
    tok = Tokenizer.from_vocab(_pieces(), {"<|x|>": 260}, tk.GPT2_PATTERN, None, None)
    assert tok.decode([260]) == "<|x|>" and 260 not in tok.encode("hello world", bos=False)


@pytest.mark.parametrize("regex", ["", "a*", "x|", r"\b", "(?=a)", "(", r"(a)\1", "(a+)+$", r"(\w+\s?)+$",
                                   "(?:a*)*", "(x|y+){2,}", 42, None, "a" * 5000, "abc", r"\p{L}+", "\x00\x00"])
def test_bad_pre_tokenizer_patterns_are_refused_at_load(tmp_path: Path, regex: Any) -> None:
    with pytest.raises(TokenizerError):
        Tokenizer.from_tokenizer_json(_tokenizer_json(tmp_path, regex=regex))


@pytest.mark.parametrize("pattern", [tk.LLAMA3_PATTERN, tk.GPT2_PATTERN, tk.SMOLLM_PATTERN])
def test_builtin_patterns_pass_the_checks(pattern: str) -> None:
    assert check_pattern(pattern, "builtin") == pattern
    assert nested_quantifier(pattern) is None


@pytest.mark.parametrize("pattern,bomb", [
    ("(a+)+", True), ("((a)+b)*", True), ("(a{2,})+", True), ("(ab)+", False), (r"\((a+)\)+", False),
    ("[(]+)", False), (r"(a+){1}", False), (r"(a|b)?c+", False), (r"\p{N}{1,3}", False),
])
def test_nested_quantifier_detection(pattern: str, bomb: bool) -> None:
    assert (nested_quantifier(pattern) is not None) is bomb


def test_text_a_pattern_misses_is_an_error_not_a_loss() -> None:
    """tiktoken encodes only what the pattern matches. A tokenizer built past the load checks (the low-level
    constructor) with a pattern that skips punctuation refuses such text instead of dropping it."""
    tok = Tokenizer({bytes([b]): b for b in range(256)}, {}, r"[a-z]+|\s+", 256, None, None, ())
    assert tok.decode(tok.encode("abc def", bos=False)) == "abc def"
    with pytest.raises(TokenizerError, match="does not cover"):
        tok.encode("abc, def", bos=False)
    with pytest.raises(TokenizerError):  # and the load-time check refuses the pattern outright
        check_pattern(r"[a-z]+|\s+", "test")
    with pytest.raises(TokenizerError):  # single digits: the lone-character probe
        check_pattern(r"\d{2,}|\D", "test")


class PanicException(BaseException):
    """Stands for pyo3_runtime.PanicException (a BaseException subclass)."""


class _Exploding:
    """A tiktoken Encoding stand-in whose encode raises what it was given."""

    name = "exploding"

    def __init__(self, exc: BaseException):
        self.exc = exc

    def encode(self, *a: Any, **k: Any) -> list[int]:
        raise self.exc

    encode_ordinary = encode


def _tok() -> Tokenizer:
    return Tokenizer.from_vocab(_pieces(), SPECIALS, tk.GPT2_PATTERN, None, 264)


def test_a_panic_at_encode_time_becomes_tokenizer_error() -> None:
    tok = _tok()
    tok._enc = _Exploding(PanicException("range end index 2 out of range for slice of length 0"))
    with pytest.raises(TokenizerError, match="panicked") as info:
        tok.encode("hello")
    assert isinstance(info.value, Error)
    with pytest.raises(TokenizerError):
        tok.encode("hello", allow_special=True)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), MemoryError()])
def test_interrupts_and_other_errors_pass_through(exc: BaseException) -> None:
    tok = _tok()
    tok._enc = _Exploding(exc)
    with pytest.raises(type(exc)):
        tok.encode("hello")


def test_real_tiktoken_panic_is_caught_at_load() -> None:
    """The low-level constructor skips the pattern checks; the encoder it builds panics on every input, and
    the panic arrives as TokenizerError."""
    ranks = {bytes([b]): b for b in range(256)}
    tok = Tokenizer(ranks, {}, "a*", 256, None, None, ())
    with pytest.raises(TokenizerError, match="panicked"):
        tok.encode("abc")


@pytest.mark.parametrize("call,exc", [
    (lambda t: t.encode(b"bytes"), InvalidArgumentTypeError),
    (lambda t: t.encode("\ud800"), InvalidArgumentError),
    (lambda t: t.decode([10**9]), InvalidArgumentError),
    (lambda t: t.decode([-1]), InvalidArgumentError),
    (lambda t: t.decode(["a"]), InvalidArgumentTypeError),
    (lambda t: t.decode(5), InvalidArgumentTypeError),
    (lambda t: t.token_bytes("x"), InvalidArgumentTypeError),
    (lambda t: t.token_bytes(10**9), InvalidArgumentError),
])
def test_argument_errors(call: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call(_tok())
