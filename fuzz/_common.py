"""Shared helpers for the atheris harnesses: import path, the exception contract, finding reports."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The harnesses import whichever llama32_native Python finds (installed, or the dev checkout through
# PYTHONPATH=python, which scripts/fuzz.sh sets when nothing else is given).

import numpy  # noqa: E402,F401 - imported before instrumentation: only our package is instrumented
import tiktoken  # noqa: E402,F401
import atheris  # noqa: E402

with atheris.instrument_imports(include=["llama32_native"]):
    import llama32_native  # noqa: E402
    import llama32_native.config  # noqa: E402,F401
    import llama32_native.loading.gguf  # noqa: E402,F401
    import llama32_native.loading.gguf_model  # noqa: E402,F401
    import llama32_native.loading.safetensors  # noqa: E402,F401
    import llama32_native.tokenizer  # noqa: E402,F401
from llama32_native.errors import Error  # noqa: E402

# What the error contract (docs/ERRORS.md) allows a parser to raise on hostile input. Everything else is a finding.
ALLOWED: tuple[type[BaseException], ...] = (Error,)


def check(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> None:
    """Re-raise exc unless it is part of the documented contract (the fuzzer then saves a crash file)."""
    if isinstance(exc, ALLOWED + extra):
        return
    raise exc


def corpus_dir(name: str) -> Path:
    return ROOT / "fuzz" / "corpus" / name


__all__ = ["ALLOWED", "Error", "ROOT", "check", "corpus_dir", "llama32_native"]
