"""Shared helpers for the tokenizer, chat and streaming tests (imported by those test files).

The real Llama 3 ``tokenizer.model`` ships in Meta's ``llama-models`` PyPI package
(``pip install --no-deps llama-models``); tests that need it skip only when that package is
not installed, and fail if it is installed but the file is missing.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
from llama32_native.tokenizer import GPT2_PATTERN, Tokenizer

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
