"""The package's own pre-quantized file: a safetensors container that from_pretrained maps without requantizing.

Layout: every tensor under its internal name, quantized ones as U8 plain ggml blocks; the metadata holds
the format tag, the config (our vocabulary), the tensor kinds and the tokenizer's description; the tokenizer's
token bytes travel as two tensors (`__tokenizer.bytes`, `__tokenizer.offsets`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..config import LlamaConfig
from ..errors import ModelLoadError
from . import Tensor
from .safetensors import SafetensorsFile, write_safetensors

FORMAT_TAG = "llama32_native/1"
_STORAGE_DTYPE = {"f32": None, "f16": None, "bf16": "BF16", "q8_0": "U8", "q4_0": "U8"}


def is_native_file(sf: SafetensorsFile) -> bool:
    return sf.metadata.get("format") == FORMAT_TAG


def _tokenizer_tensors(tok: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    specials = dict(tok.special_ids)
    special_set = set(specials.values())
    pieces = [b"" if i in special_set else tok.token_bytes(i) for i in range(tok.n_vocab)]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in pieces])
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8) if offsets[-1] else np.zeros(0, np.uint8)
    desc = {
        "pattern": tok.pattern,
        "specials": specials,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "stop_ids": sorted(tok.stop_tokens),
        "add_bos": bool(getattr(tok, "add_bos", True)),
        "n_vocab": tok.n_vocab,
    }
    return {"__tokenizer.bytes": data, "__tokenizer.offsets": offsets}, desc


def save_model(model: Any, path: str | os.PathLike) -> None:
    from ..model import matrix_names, vector_names

    cfg: LlamaConfig = model.config
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for name in matrix_names(cfg) + vector_names(cfg):
        kind, arr = model.tensor_data(name)
        tensors[name] = arr
        kinds[name] = kind
        if _STORAGE_DTYPE.get(kind):
            dtypes[name] = _STORAGE_DTYPE[kind]
    meta = {"format": FORMAT_TAG, "config": json.dumps(cfg.to_dict()), "kinds": json.dumps(kinds),
            "quant": model.quant}
    if model.tokenizer is not None:
        tok_tensors, desc = _tokenizer_tensors(model.tokenizer)
        tensors.update(tok_tensors)
        meta["tokenizer"] = json.dumps(desc)
        fmt = model.chat_format
        if fmt is not None:
            meta["chat_format"] = type(fmt).__name__
            default_system = getattr(fmt, "default_system", None)
            if default_system:
                meta["chat_default_system"] = default_system
    write_safetensors(path, tensors, meta, dtypes=dtypes)


def load_native(sf: SafetensorsFile) -> tuple[LlamaConfig, dict[str, Tensor], dict[str, str], str, Any, Any]:
    """(config, tensors, plan, quant, tokenizer or None, chat format or None) from an open native file."""
    from ..model import matrix_names, vector_names

    meta = sf.metadata
    try:
        cfg = LlamaConfig.from_dict(json.loads(meta["config"]))
        kinds = json.loads(meta["kinds"])
        quant = meta.get("quant", "q4_0")
    except (KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{sf.path}: damaged llama32_native metadata ({e})") from None
    if not isinstance(kinds, dict):
        raise ModelLoadError(f"{sf.path}: damaged llama32_native metadata (kinds)")
    tensors: dict[str, Tensor] = {}
    for name in matrix_names(cfg) + vector_names(cfg):
        if name not in sf:
            if name == "output" and cfg.tie_word_embeddings:
                continue
            raise ModelLoadError(f"{sf.path}: tensor {name!r} is missing")
        kind = kinds.get(name)
        arr = sf.array(name)
        if kind in ("q8_0", "q4_0"):
            shape = (arr.shape[0], arr.shape[1] // (34 if kind == "q8_0" else 18) * 32) if arr.ndim == 2 else ()
        elif kind in ("f32", "f16", "bf16"):
            shape = tuple(arr.shape)
        else:
            raise ModelLoadError(f"{sf.path}: tensor {name!r} has unknown kind {kind!r}")
        tensors[name] = Tensor(kind, tuple(int(s) for s in shape), arr)
    plan = {n: k for n, k in kinds.items() if n in tensors and len(tensors[n].shape) == 2}
    tokenizer = chat = None
    if "tokenizer" in meta:
        from ..tokenizer import Tokenizer

        desc = json.loads(meta["tokenizer"])
        data = sf.array("__tokenizer.bytes").tobytes()
        offsets = sf.array("__tokenizer.offsets")
        specials = {str(k): int(v) for k, v in desc["specials"].items()}
        special_set = set(specials.values())
        pieces = [None if i in special_set or offsets[i] == offsets[i + 1] else data[offsets[i]:offsets[i + 1]]
                  for i in range(len(offsets) - 1)]
        tokenizer = Tokenizer.from_vocab(pieces, specials, desc["pattern"], desc["bos_id"], desc["eos_id"],
                                         desc["stop_ids"], n_vocab=desc["n_vocab"], add_bos=desc["add_bos"],
                                         name="saved")
        from .. import chat as chat_mod

        if meta.get("chat_format") == "ChatMLFormat":
            chat = chat_mod.ChatMLFormat(tokenizer, default_system=meta.get("chat_default_system"))
        elif meta.get("chat_format") == "Llama3ChatFormat":
            chat = chat_mod.Llama3ChatFormat(tokenizer)
    return cfg, tensors, plan, quant, tokenizer, chat
