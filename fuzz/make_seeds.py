"""Build the committed seed corpora under fuzz/corpus/ from tests/mkbad.py and tests/mkbad_gguf.py.

Usage: python fuzz/make_seeds.py   (rewrites fuzz/corpus/{safetensors,config,gguf,tokenizer})
Seeds are kept small: safetensors seeds hold the claimed file size + the header (+16 data bytes),
GGUF seeds over MAX_SEED bytes are dropped, config seeds are the config.json files of the cases.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
MAX_SEED = 16 << 10
TOKENIZER_SEEDS = [
    "hello world", "", " ", "\n\n\n", "   leading", "trailing   ", "Hello, World! 123 4567 89012",
    "<|begin_of_text|><|eot_id|><|start_header_id|>system<|end_header_id|>", "<|reserved_special_token_5|>",
    "é à ç ñ ü ß", "日本語のテキスト", "emoji 👍🏽👨‍👩‍👧", "\u0645\u0631\u062d\u0628\u0627 RTL", "e\u0301\u0302",
    "a" * 300, "^" * 300, "\x00NUL\x00", "tabs\tand\rreturns", "'s 're 've 'll 'd n't", "1234567890" * 5,
]


KINDS = ("safetensors", "config", "gguf", "tokenizer", "native", "tokenizer_json")


def _native_and_tokenizer_json_seeds() -> None:
    """Structure-aware harnesses: byte strings that steer their edits, and raw tokenizer.json documents."""
    import random

    rng = random.Random(13)
    for i in range(24):
        data = bytes(rng.randrange(256) for _ in range(8 + 6 * i))
        _put("native", data)
        _put("tokenizer_json", bytes([2 * rng.randrange(128)]) + data)
    sys.path.insert(0, str(ROOT / "fuzz"))
    sys.path.insert(0, str(ROOT / "python"))
    import json

    from llama32_native.tokenizer import byte_level_from_bytes

    vocab = {byte_level_from_bytes(bytes([b])): b for b in range(256)}
    vocab[byte_level_from_bytes(b"he")] = 256
    for regex in (r"\p{L}+|\s+|.", "", "(a+)+$", r"'s|\S+|\s+"):
        doc = {"model": {"type": "BPE", "vocab": vocab, "merges": []}, "pre_tokenizer": {
            "type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            "added_tokens": [{"id": 257, "content": "<|endoftext|>"}]}
        _put("tokenizer_json", b"\x01" + json.dumps(doc).encode())


def _name(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _put(kind: str, data: bytes) -> None:
    if len(data) <= MAX_SEED:
        (CORPUS / kind / _name(data)).write_bytes(data)


def _safetensors_seed(path: Path) -> bytes:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else 0
    keep = raw[: min(len(raw), 8 + n + 16)] if n < MAX_SEED else raw[:64]
    return struct.pack("<Q", len(raw)) + keep


def _run(script: str, out: Path) -> None:
    env = {"PYTHONPATH": str(ROOT / "python")}
    subprocess.run([sys.executable, str(ROOT / "tests" / script), str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    for kind in KINDS:
        shutil.rmtree(CORPUS / kind, ignore_errors=True)
        (CORPUS / kind).mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        st, gg = Path(tmp, "st"), Path(tmp, "gg")
        _run("mkbad.py", st)
        _run("mkbad_gguf.py", gg)
        for p in sorted(st.rglob("*.safetensors")):
            _put("safetensors", _safetensors_seed(p))
        for p in sorted(st.rglob("config.json")):
            _put("config", b"\x01" + p.read_bytes())  # first byte odd: raw-JSON mode
        for p in sorted(gg.glob("*.gguf")):
            _put("gguf", p.read_bytes())
    for i in range(8):
        _put("config", bytes([2 * i]) + bytes(range(i, i + 24)))  # structure-aware mode
    for text in TOKENIZER_SEEDS:
        _put("tokenizer", b"\x02" + text.encode("utf-8"))
    _native_and_tokenizer_json_seeds()
    for kind in KINDS:
        files = list((CORPUS / kind).iterdir())
        print(f"{kind}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
