"""atheris harness: Llama 3 tokenizer encode/decode round trip (Meta's tokenizer.model from llama-models).

Properties: decode(encode(text)) == text for any valid Unicode text; encode never yields special
ids for plain text (docs/MODEL.md, "Tokenizer"); a lone surrogate raises ValueError (documented); decode of
any in-range ids returns a str; out-of-range ids raise ValueError.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native.tokenizer import Tokenizer


def _tokenizer() -> Tokenizer:
    spec = importlib.util.find_spec("llama_models")
    if spec is None or spec.origin is None:
        sys.exit("fuzz_tokenizer needs llama-models (pip install --no-deps llama-models)")
    return Tokenizer.from_tiktoken_file(Path(spec.origin).parent / "llama3" / "tokenizer.model")


TOK = _tokenizer()
N_BASE = 128000


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 3:  # arbitrary ids, some out of range
        ids = [fdp.ConsumeIntInRange(-2, TOK.n_vocab + 1) for _ in range(fdp.ConsumeIntInRange(0, 64))]
        try:
            assert isinstance(TOK.decode(ids), str)
        except ValueError:
            assert any(not 0 <= i < TOK.n_vocab for i in ids), ids
        return
    if mode == 2:  # raw bytes as UTF-8 with replacement: always valid text
        text = fdp.ConsumeBytes(fdp.remaining_bytes()).decode("utf-8", errors="replace")
    else:  # unicode possibly containing lone surrogates
        text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    try:
        ids = TOK.encode(text, bos=False)
    except ValueError as e:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return  # documented: lone surrogate -> ValueError
        check(e)
        return
    assert all(0 <= i < N_BASE for i in ids), "plain text produced a special id"
    back = TOK.decode(ids)
    assert back == text, (text, ids, back)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
