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

from .. import schema
from ..config import LlamaConfig
from ..errors import (
    ConfigError,
    MissingTensorError,
    ModelLoadError,
    TensorShapeError,
    TokenizerError,
    UnexpectedTensorError,
    UnsupportedDTypeError,
)
from ..files import parse_json
from . import Tensor
from .safetensors import SafetensorsFile, write_safetensors

FORMAT_TAG = "llama32_native/1"
QUANTS = ("f32", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl")
_STORED_AS = {"f32": "F32", "f16": "F16", "bf16": "BF16", **{k: "U8" for k in schema.BLOCK_BYTES}}
_STORAGE_DTYPE = {k: v for k, v in _STORED_AS.items() if v in ("BF16", "U8")}  # numpy cannot tell these apart
_TOKENIZER_TENSORS = ("__tokenizer.bytes", "__tokenizer.offsets")


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
    cfg: LlamaConfig = model.config
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for spec in schema.tensor_specs(cfg):
        kind, arr = model.tensor_data(spec.name)
        tensors[spec.name] = arr
        kinds[spec.name] = kind
        if _STORAGE_DTYPE.get(kind):
            dtypes[spec.name] = _STORAGE_DTYPE[kind]
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


# ----------------------------------------------------------------------------- loading


def _meta_json(sf: SafetensorsFile, key: str, cls: type[ModelLoadError], want: type) -> Any:
    if key not in sf.metadata:
        raise cls(f"{sf.path}: llama32_native metadata has no {key!r}")
    value = parse_json(sf.metadata[key], f"{sf.path}: metadata {key!r}", cls)
    if not isinstance(value, want):
        raise cls(f"{sf.path}: metadata {key!r} must be a JSON {want.__name__}, got {type(value).__name__}")
    return value


def _check_entry(sf: SafetensorsFile, name: str, kind: Any, shape: tuple[int, ...]) -> None:
    """The stored dtype/shape of tensor `name` is what `kind` and the schema shape need."""
    if kind not in schema.KINDS:
        raise UnsupportedDTypeError(f"{sf.path}: tensor {name!r} has unknown kind {kind!r}")
    e = sf.entries[name]
    if e.dtype != _STORED_AS[kind]:
        raise UnsupportedDTypeError(f"{sf.path}: tensor {name!r} of kind {kind} is stored as {e.dtype}")
    stored = shape
    if kind in schema.BLOCK_BYTES:
        if len(shape) != 2 or shape[1] % schema.QK:
            raise TensorShapeError(f"{sf.path}: tensor {name!r}: {kind} needs a matrix of whole {schema.QK}-blocks")
        stored = (shape[0], shape[1] // schema.QK * schema.BLOCK_BYTES[kind])
    if e.shape != stored:
        raise TensorShapeError(
            f"{sf.path}: tensor {name!r} ({kind}) is stored as {list(e.shape)}, the config needs {list(stored)}"
        )


def load_native(sf: SafetensorsFile) -> tuple[LlamaConfig, dict[str, Tensor], dict[str, str], str, Any, Any]:
    """(config, tensors, plan, quant, tokenizer or None, chat format or None) from an open native file.

    Every metadata field, tensor kind, dtype and shape is checked; damage raises a ModelLoadError subclass
    (ConfigError, TokenizerError, TensorShapeError, ...), never a JSON, key or type error.
    """
    cfg = LlamaConfig.from_dict(_meta_json(sf, "config", ConfigError, dict))
    kinds = _meta_json(sf, "kinds", ModelLoadError, dict)
    quant = sf.metadata.get("quant", "q4_0")
    if quant not in QUANTS:
        raise ModelLoadError(f"{sf.path}: metadata 'quant' = {quant[:40]!r}, expected one of {', '.join(QUANTS)}")
    specs = schema.tensor_specs(cfg)
    known = {s.name for s in specs} | set(_TOKENIZER_TENSORS) | {"output"}
    unknown = sorted(set(sf.entries) - known)
    if unknown:
        raise UnexpectedTensorError(f"{sf.path}: unexpected tensor {unknown[0]!r} for this config")
    tensors: dict[str, Tensor] = {}
    for spec in specs:
        if spec.name not in sf:
            raise MissingTensorError(f"{sf.path}: tensor {spec.name!r} is missing")
        kind = kinds.get(spec.name)
        _check_entry(sf, spec.name, kind, spec.shape)
        tensors[spec.name] = Tensor(kind, spec.shape, sf.array(spec.name))
    plan = {s.name: kinds[s.name] for s in specs if s.role == schema.MATRIX}
    tokenizer = chat = None
    if "tokenizer" in sf.metadata:
        tokenizer = _load_tokenizer(sf, cfg)
        chat = _load_chat_format(sf, tokenizer)
    elif any(n in sf for n in _TOKENIZER_TENSORS):
        raise TokenizerError(f"{sf.path}: tokenizer tensors without 'tokenizer' metadata")
    return cfg, tensors, plan, quant, tokenizer, chat


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load_tokenizer(sf: SafetensorsFile, cfg: LlamaConfig) -> Any:
    from ..tokenizer import Tokenizer

    where = f"{sf.path}: tokenizer metadata"
    desc = _meta_json(sf, "tokenizer", TokenizerError, dict)
    fields = {"pattern": str, "specials": dict, "bos_id": (int, type(None)), "eos_id": (int, type(None)),
              "stop_ids": list, "add_bos": bool, "n_vocab": int}
    for key, want in fields.items():
        v = desc.get(key)
        if key not in desc or not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise TokenizerError(f"{where}: field {key!r} is missing or has the wrong type ({type(v).__name__})")
    n_vocab = desc["n_vocab"]
    if not 0 < n_vocab <= cfg.n_vocab:
        raise TokenizerError(f"{where}: n_vocab {n_vocab} is outside [1, {cfg.n_vocab}] (the model's vocabulary)")
    specials = desc["specials"]
    if not all(isinstance(k, str) and _int(v) for k, v in specials.items()):
        raise TokenizerError(f"{where}: 'specials' must map names to integer ids")
    ids = [desc["bos_id"], desc["eos_id"], *desc["stop_ids"]]
    if not all(i is None or (_int(i) and 0 <= i < n_vocab) for i in ids):
        raise TokenizerError(f"{where}: a bos/eos/stop id is not an integer in [0, {n_vocab})")
    for name in _TOKENIZER_TENSORS:
        if name not in sf:
            raise TokenizerError(f"{sf.path}: tensor {name!r} is missing")
    data_e, off_e = sf.entries["__tokenizer.bytes"], sf.entries["__tokenizer.offsets"]
    if data_e.dtype != "U8" or len(data_e.shape) != 1 or off_e.dtype != "I64" or off_e.shape != (n_vocab + 1,):
        raise TokenizerError(f"{sf.path}: tokenizer tensors must be U8 bytes and {n_vocab + 1} I64 offsets")
    data = sf.array("__tokenizer.bytes").tobytes()
    offsets = sf.array("__tokenizer.offsets")
    if offsets[0] != 0 or offsets[-1] != len(data) or bool(np.any(np.diff(offsets) < 0)):
        raise TokenizerError(f"{sf.path}: tokenizer offsets do not run from 0 to {len(data)} without going back")
    special_set = set(specials.values())
    bounds = offsets.tolist()
    pieces = [None if i in special_set or bounds[i] == bounds[i + 1] else data[bounds[i]:bounds[i + 1]]
              for i in range(n_vocab)]
    return Tokenizer.from_vocab(pieces, specials, desc["pattern"], desc["bos_id"], desc["eos_id"], desc["stop_ids"],
                                n_vocab=n_vocab, add_bos=desc["add_bos"], name=f"{sf.path} (saved)")


def _load_chat_format(sf: SafetensorsFile, tokenizer: Any) -> Any:
    from .. import chat as chat_mod

    name = sf.metadata.get("chat_format")
    if name is None:
        return None
    formats = {"ChatMLFormat": lambda: chat_mod.ChatMLFormat(tokenizer, sf.metadata.get("chat_default_system")),
               "Llama3ChatFormat": lambda: chat_mod.Llama3ChatFormat(tokenizer)}
    if name in formats:
        try:
            return formats[name]()
        except (KeyError, ValueError) as e:  # the tokenizer lacks the format's special tokens
            raise TokenizerError(f"{sf.path}: chat format {name} does not fit the tokenizer ({e})") from None
    raise ModelLoadError(f"{sf.path}: unknown chat format {name[:40]!r}")
