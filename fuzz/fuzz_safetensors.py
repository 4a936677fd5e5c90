"""atheris harness: safetensors header parser (`loading.safetensors.parse_header`).

Input layout: 8 bytes little-endian claimed file size, then the file's first bytes. Only
SafetensorsFormatError / UnsupportedDTypeError (the package's Error hierarchy) may escape.
Run: python fuzz/fuzz_safetensors.py [libFuzzer flags] NEW_CORPUS_DIR fuzz/corpus/safetensors
"""

from __future__ import annotations

import struct
import sys

import atheris

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native.loading import safetensors as st


def test_one_input(data: bytes) -> None:
    if len(data) < 8:
        return
    (file_size,) = struct.unpack("<Q", data[:8])
    buf = data[8:]
    # The reader only ever calls parse_header with file_size >= len(buf); also try the exact size.
    for size in {file_size, len(buf)}:
        try:
            entries, metadata = st.parse_header(buf, size)
        except Exception as e:  # noqa: BLE001 - the contract check decides
            check(e)
            continue
        # A header that parses must be self-consistent: tiles cover the data section in order.
        pos = 0
        for name, entry in entries.items():
            assert isinstance(name, str) and name != "__metadata__"
            assert entry.begin == pos and entry.end >= entry.begin, (name, entry)
            assert entry.nbytes * 8 == entry.numel * st.DTYPES[entry.dtype].bits, (name, entry)
            pos = entry.end
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
