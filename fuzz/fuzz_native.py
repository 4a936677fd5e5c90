"""atheris harness: the package's own saved format (`loading.native`, through `open_checkpoint`) and the load budget.

A tiny model with a tokenizer and a chat format is saved once; each input edits that file's metadata (the config,
kinds, quant, tokenizer description, chat format: raw text, or a JSON field set to an odd value or dropped) or its
tokenizer tensors, writes it under /dev/shm and opens it, then runs the checks Model makes before it builds the
engine (memory.check_tensors, memory.estimate). Only the package's Error hierarchy may escape; a file that opens
must hold exactly the schema's tensors.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native import Model, memory, schema
    from llama32_native.config import LlamaConfig
    from llama32_native.loading.open import open_checkpoint
    from llama32_native.loading.safetensors import SafetensorsFile, write_safetensors
    from llama32_native.tokenizer import SMOLLM_PATTERN, Tokenizer

_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
_FD, PATH = tempfile.mkstemp(suffix=".safetensors", dir=_DIR)
os.close(_FD)
ODD_VALUES = [None, True, False, 0, -1, 1, 2, 7, 255, 256, 300, 2**31, 2**63, 2**64, -(2**63), 0.5, 1e-300, 1e300,
              "", "x", "q4_0", "(a+)+", "a*", "[", "\\", [], [1], [256, 257], {}, {"<|a|>": 256}, {"<|a|>": "1"}]


def _base() -> tuple[dict[str, str], dict[str, np.ndarray], dict[str, str]]:
    cfg = LlamaConfig(n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=64, n_vocab=272, n_ctx=64,
                      bos_token_id=256, eos_token_ids=(257,))
    pieces: list[bytes | None] = [bytes([b]) for b in range(256)] + [b"he", b"ll", b" w"] + [None] * 13
    tok = Tokenizer.from_vocab(pieces, {"<|im_start|>": 256, "<|im_end|>": 257, "<|endoftext|>": 258},
                               SMOLLM_PATTERN, None, 258, n_vocab=272, add_bos=False)
    with Model.random(cfg, quant="q8_0", threads=1, context_length=16, tokenizer=tok) as m:
        m.save(PATH)
    with SafetensorsFile(PATH) as sf:
        return (dict(sf.metadata), {k: np.array(sf.array(k)) for k in sf.entries},
                {k: e.dtype for k, e in sf.entries.items() if e.dtype in ("U8", "BF16")})


META, TENSORS, DTYPES = _base()
KEYS = sorted(META)


def _value(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        return fdp.PickValueInList(ODD_VALUES)
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 9))
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))


def _mutate(fdp: atheris.FuzzedDataProvider) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    meta, tensors = dict(META), dict(TENSORS)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        op = fdp.ConsumeIntInRange(0, 4)
        key = fdp.PickValueInList(KEYS)
        if op == 0:  # raw text
            meta[key] = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
        elif op == 1:  # drop a key
            meta.pop(key, None)
        elif op == 2 and key in ("config", "kinds", "tokenizer") and key in meta:  # one JSON field
            try:
                doc = json.loads(meta[key])
            except ValueError:
                continue
            if isinstance(doc, dict) and doc:
                field = fdp.PickValueInList(sorted(doc))
                if fdp.ConsumeBool():
                    doc.pop(field)
                else:
                    doc[field] = _value(fdp)
                meta[key] = json.dumps(doc)
        elif op == 3:  # tokenizer offsets
            n = fdp.ConsumeIntInRange(0, 300)
            tensors["__tokenizer.offsets"] = np.array([fdp.ConsumeIntInRange(-2, 1200) for _ in range(n)],
                                                      dtype=np.int64)
        else:  # tokenizer bytes
            tensors["__tokenizer.bytes"] = np.frombuffer(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200)),
                                                         dtype=np.uint8)
    return meta, tensors


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    meta, tensors = _mutate(fdp)
    write_safetensors(PATH, tensors, meta, dtypes={k: v for k, v in DTYPES.items() if k in tensors})
    try:
        ckpt = open_checkpoint(PATH)
    except Exception as e:  # noqa: BLE001 - the contract check decides
        check(e)
        return
    try:
        assert set(ckpt.tensors) == set(schema.tensor_shapes(ckpt.config)), sorted(ckpt.tensors)
        plan = ckpt.plan or schema.tensor_plan(ckpt.config, ckpt.quant or "q4_0")
        memory.check_tensors(ckpt.config, ckpt.tensors, plan)
        memory.estimate(ckpt.config, plan, min(16, ckpt.config.n_ctx), 1, "f16")
        if ckpt.tokenizer is not None:
            text = fdp.ConsumeUnicodeNoSurrogates(64)
            ids = ckpt.tokenizer.encode(text, bos=False)
            assert ckpt.tokenizer.decode(ids) is not None
    except Exception as e:  # noqa: BLE001
        check(e)
    finally:
        ckpt.close()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
