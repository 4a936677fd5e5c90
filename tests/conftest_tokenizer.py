"""Shared helpers for the tokenizer, chat and streaming tests (imported by those test files).

The real Llama 3 ``tokenizer.model`` ships in Meta's ``llama-models`` PyPI package
(``pip install --no-deps llama-models``); tests that need it skip only when that package is
not installed, and fail if it is installed but the file is missing. Tests that only need Llama 3
conventions (special names, BOS, stop tokens, the chat format) use ``tiny_llama3_tokenizer``.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
from pathlib import Path

import pytest
from llama32_native.tokenizer import GPT2_PATTERN, LLAMA3_PATTERN, Tokenizer, llama3_special_tokens

CHATML_SPECIALS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
# A few multi-byte tokens on top of the 256 single bytes (ids = ranks = merge priority).
SMALL_MERGES = [b"he", b"ll", b"llo", b"hello", b" w", b"or", b"orld", b" world", b"\xc3\xa9", b"12"]


def llama3_tokenizer_model_path() -> Path:
    """Path of ``llama_models/llama3/tokenizer.model``; skips if llama-models is missing."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or spec.origin is None:
        pytest.skip("llama-models is not installed (pip install --no-deps llama-models)")
    path = Path(spec.origin).parent / "llama3" / "tokenizer.model"
    assert path.is_file(), f"llama-models is installed but {path} is missing"
    return path


@functools.lru_cache(maxsize=1)
def _load_llama3() -> Tokenizer:
    return Tokenizer.from_tiktoken_file(llama3_tokenizer_model_path())


def llama3_tokenizer() -> Tokenizer:
    """The real Llama 3 tokenizer (loaded once per session)."""
    llama3_tokenizer_model_path()  # skip cleanly before touching the cache
    return _load_llama3()


# A tiny Llama-3-style vocabulary: the 256 bytes, a few merges (ids = ranks), then Meta's 256 special names from
# id TINY_LLAMA3_N_BASE on, so Llama 3 conventions (BOS, stop tokens, the chat format) hold with a small vocabulary.
TINY_LLAMA3_MERGES = [b"He", b"ll", b"llo", b"Hello", b" w", b"or", b"orld", b" world", b"hi", b" there", b"\xf0\x9f"]
TINY_LLAMA3_N_BASE = 256 + len(TINY_LLAMA3_MERGES)
TINY_LLAMA3_N_VOCAB = TINY_LLAMA3_N_BASE + 256


def tiny_llama3_tiktoken_text() -> str:
    """The tiny Llama-3-style vocabulary as a Meta ``tokenizer.model`` (``<base64> <rank>`` lines)."""
    pieces = [bytes([b]) for b in range(256)] + TINY_LLAMA3_MERGES
    return "".join(f"{base64.b64encode(p).decode()} {rank}\n" for rank, p in enumerate(pieces))


def tiny_llama3_tokenizer() -> Tokenizer:
    """The tiny Llama-3-style tokenizer (what Tokenizer.from_tiktoken_file makes of tiny_llama3_tiktoken_text)."""
    return Tokenizer.from_vocab(
        [bytes([b]) for b in range(256)] + TINY_LLAMA3_MERGES,
        llama3_special_tokens(TINY_LLAMA3_N_BASE, TINY_LLAMA3_N_VOCAB),
        LLAMA3_PATTERN,
        None,
        None,
        n_vocab=TINY_LLAMA3_N_VOCAB,
        name="tiny-llama3",
    )


def small_vocab() -> list[bytes | None]:
    """token_bytes for a SmolLM-like vocabulary: 3 specials first, then bytes, then merges."""
    return [None] * len(CHATML_SPECIALS) + [bytes([b]) for b in range(256)] + SMALL_MERGES


def chatml_tokenizer(add_bos: bool = False) -> Tokenizer:
    """A tiny byte-level tokenizer with ChatML specials at ids 0..2 (like SmolLM2)."""
    return Tokenizer.from_vocab(
        small_vocab(),
        CHATML_SPECIALS,
        GPT2_PATTERN,
        bos_id=CHATML_SPECIALS["<|im_start|>"],
        eos_id=CHATML_SPECIALS["<|endoftext|>"],
        add_bos=add_bos,
        name="tiny-chatml",
    )
