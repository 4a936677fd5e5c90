"""atheris harness: tokenizer data from files (`Tokenizer.from_tokenizer_json` with its tokenizer_config.json).

Two modes chosen by the first byte: the raw bytes of a tokenizer.json (libFuzzer mutates the seeds), or a small
valid document with fuzzed edits (the Split regex, vocab ids and strings, added tokens, bos/eos names). The
tokenizer that loads then encodes and decodes fuzzed text. Only the package's Error hierarchy may escape loading;
a tokenizer that loaded must encode (or refuse text its pattern does not cover with TokenizerError; no other error,
no converted panic), decode what it encoded back to the text when the vocabulary covers every byte, and never
yield an id outside its vocabulary.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native.errors import TokenizerError
    from llama32_native.tokenizer import GPT2_PATTERN, LLAMA3_PATTERN, SMOLLM_PATTERN, Tokenizer, byte_level_from_bytes

_DIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(_DIR, "tokenizer.json")
CONFIG_PATH = os.path.join(_DIR, "tokenizer_config.json")
MERGES = [b"he", b"ll", b"lo", b" w", b"or", b"ld", b"hello", b" world"]
REGEXES = [LLAMA3_PATTERN, GPT2_PATTERN, SMOLLM_PATTERN, "", "a*", "(a+)+$", r"(\w+\s?)+$", r"\p{L}+|\s+|.",
           r"(?i:'s|'t)|\S+|\s+", r"\s+(?!\S)|\s+|\S", "(", r"(a)\1", "[^]", r"\d{2,}|\D", "x{1000000}", r".{0,3}"]
SPECIAL_NAMES = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>", "", "a", "he"]


def _doc() -> dict:
    vocab = {byte_level_from_bytes(bytes([b])): b for b in range(256)}
    vocab.update({byte_level_from_bytes(m): 256 + i for i, m in enumerate(MERGES)})
    return {
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "added_tokens": [{"id": 264, "content": "<|endoftext|>"}, {"id": 265, "content": "<|im_start|>"},
                         {"id": 266, "content": "<|im_end|>"}],
    }


def _structured(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, bytes | None]:
    doc = _doc()
    cfg: dict = {}
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 5)
        if op == 0:
            regex = fdp.PickValueInList(REGEXES) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(16)
            doc["pre_tokenizer"] = _doc()["pre_tokenizer"]
            doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = regex
        elif op == 1:  # a vocab entry gets another id (duplicates, holes, huge ids)
            vocab = doc["model"]["vocab"]
            key = fdp.PickValueInList(sorted(vocab))
            vocab[key] = fdp.ConsumeIntInRange(-1, 300) if fdp.ConsumeBool() else fdp.ConsumeInt(4)
        elif op == 2:  # a new vocab string
            doc["model"]["vocab"][fdp.ConsumeUnicodeNoSurrogates(4)] = fdp.ConsumeIntInRange(0, 300)
        elif op == 3:
            doc["added_tokens"].append({"id": fdp.ConsumeIntInRange(-1, 300),
                                        "content": fdp.PickValueInList(SPECIAL_NAMES)})
        elif op == 4:
            cfg[fdp.PickValueInList(["bos_token", "eos_token", "add_bos_token"])] = (
                fdp.PickValueInList(SPECIAL_NAMES + [None, True, 5, {"content": "<|im_end|>"}]))
        else:
            doc["pre_tokenizer"] = fdp.PickValueInList([None, {"type": "ByteLevel", "use_regex": True},
                                                        {"type": "Digits", "individual_digits": True},
                                                        {"type": "Split", "pattern": {"String": " "}}])
    return json.dumps(doc).encode(), (json.dumps(cfg).encode() if cfg else None)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    if data[0] & 1:
        raw, cfg = data[1:], None
        text = "hello world 123"
    else:
        raw, cfg = _structured(fdp)
        text = fdp.ConsumeUnicodeNoSurrogates(48)
    with open(PATH, "wb") as f:
        f.write(raw)
    if cfg is None:
        if os.path.exists(CONFIG_PATH):
            os.unlink(CONFIG_PATH)
    else:
        with open(CONFIG_PATH, "wb") as f:
            f.write(cfg)
    try:
        tok = Tokenizer.from_tokenizer_json(PATH)
    except Exception as e:  # noqa: BLE001 - the contract check decides
        check(e)
        return
    try:
        ids = tok.encode(text, bos=False)
    except TokenizerError as e:  # documented: text the file's pattern does not cover is refused, not dropped
        assert "does not cover" in str(e), e  # any other failure (a converted panic included) is a finding
        return
    assert all(0 <= i < tok.n_vocab for i in ids), ids
    if all(tok.token_bytes(b) == bytes([b]) for b in range(256)):  # every byte has its own token
        assert tok.decode(ids) == text, (text, ids)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
