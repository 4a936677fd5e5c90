"""atheris harness: GGUF reader (`read_gguf`, then `gguf_config`, the GGUF tokenizer and `gguf_tensors`).

The input is written to a file under /dev/shm (the reader's public entry point takes a path) and
parsed. Only GGUFFormatError / ConfigError / ModelLoadError (the package's Error hierarchy) may
escape; a parsed file's tensors must lie inside the file.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native.loading import gguf
    from llama32_native.loading.gguf_model import tokenizer_from_gguf

_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
_FD, PATH = tempfile.mkstemp(suffix=".gguf", dir=_DIR)
os.close(_FD)


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        g = gguf.read_gguf(PATH)
    except Exception as e:  # noqa: BLE001
        check(e)
        return
    try:
        for info in g.tensors.values():
            assert 0 <= g.data_offset + info.offset <= g.data_offset + info.offset + info.n_bytes <= len(data), info
        try:
            cfg = gguf.gguf_config(g)
        except Exception as e:  # noqa: BLE001
            check(e)
            return
        try:
            tokenizer_from_gguf(gguf.tokenizer_metadata(g), cfg.n_vocab)
        except Exception as e:  # noqa: BLE001
            check(e)
        try:
            gguf.gguf_tensors(g, cfg)
        except Exception as e:  # noqa: BLE001
            check(e)
    finally:
        g.close()


def main() -> None:
    try:
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
    finally:
        os.unlink(PATH)


if __name__ == "__main__":
    main()
