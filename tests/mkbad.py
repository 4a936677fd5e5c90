"""Generator of malformed safetensors files and HF checkpoint directories (docs/FORMATS.md, "Safetensors"
and "Hugging Face directories"; docs/ERRORS.md, "Malformed files").

Contract: every case carries the exact exception type the loader must raise (None: must load).
Used by tests/test_safetensors.py, tests/test_hf_loading.py and as a fuzzing seed corpus:
`python tests/mkbad.py OUTDIR` writes every file case as OUTDIR/<id>.safetensors and every
directory case under OUTDIR/<id>/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

try:
    from llama32_native import errors as E
    from llama32_native.loading.safetensors import write_safetensors
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from llama32_native import errors as E
    from llama32_native.loading.safetensors import write_safetensors

# A tiny Llama: 2 layers, hidden 64, 4 heads of 16, 2 KV heads, vocab 256, tied embeddings.
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 256,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}


# ----------------------------------------------------------------------------- valid checkpoints


def hf_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape of a checkpoint for `config` (lm_head only when untied)."""
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    h, k = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or d // h
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update(
            {
                p + "input_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (h * hd, d),
                p + "self_attn.k_proj.weight": (k * hd, d),
                p + "self_attn.v_proj.weight": (k * hd, d),
                p + "self_attn.o_proj.weight": (d, h * hd),
                p + "post_attention_layernorm.weight": (d,),
                p + "mlp.gate_proj.weight": (f, d),
                p + "mlp.up_proj.weight": (f, d),
                p + "mlp.down_proj.weight": (d, f),
            }
        )
    out["model.norm.weight"] = (d,)
    if not config.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (v, d)
    return out


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round half to even (NaN stays NaN)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(a), np.uint16(0x7FC0), rounded)


def tiny_tensors(config: Mapping[str, Any] = TINY_CONFIG, seed: int = 0, dtype: str = "F32") -> dict[str, np.ndarray]:
    """Random weights for `config` by HF name; dtype "F32" | "F16" | "BF16" (BF16 as uint16 bits)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in hf_shapes(config).items():
        a = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if name.endswith("norm.weight"):
            a += 1.0
        out[name] = {"F32": a, "F16": a.astype(np.float16), "BF16": to_bf16_bits(a)}[dtype]
    return out


def write_config(directory: Path, config: Mapping[str, Any] | str | bytes) -> None:
    raw = config if isinstance(config, (str, bytes)) else json.dumps(config, indent=2)
    mode = "wb" if isinstance(raw, bytes) else "w"
    with open(directory / "config.json", mode) as f:
        f.write(raw)


def write_checkpoint(
    directory: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | str | bytes = TINY_CONFIG,
    tensors: Mapping[str, np.ndarray] | None = None,
    dtypes: Mapping[str, str] | None = None,
    n_shards: int = 1,
) -> Path:
    """Write config.json + model.safetensors (or n_shards shards + index) and return the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_config(d, config)
    if tensors is None:
        tensors = tiny_tensors(config if isinstance(config, Mapping) else TINY_CONFIG)
    dtypes = dict(dtypes or {})
    bf16 = {n: "BF16" for n, a in tensors.items() if a.dtype == np.uint16 and n not in dtypes}
    dtypes.update(bf16)
    if n_shards == 1:
        write_safetensors(d / "model.safetensors", tensors, {"format": "pt"}, dtypes=dtypes)
        return d
    names = list(tensors)
    groups = [names[i::n_shards] for i in range(n_shards)]
    weight_map = {}
    for k, group in enumerate(groups, 1):
        shard = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        write_safetensors(
            d / shard,
            {n: tensors[n] for n in group},
            {"format": "pt"},
            dtypes={n: dtypes[n] for n in group if n in dtypes},
        )
        weight_map.update({n: shard for n in group})
    write_index(d, weight_map)
    return d


def write_index(directory: Path, weight_map: Any, text: str | None = None) -> None:
    if text is None:
        text = json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2)
    (directory / "model.safetensors.index.json").write_text(text)


# ----------------------------------------------------------------------------- raw safetensors bytes


def st_bytes(header: Any, data: bytes = b"", *, n: int | None = None) -> bytes:
    """8-byte length + header (dict -> JSON, str -> UTF-8, bytes as is) + data; n overrides the length."""
    if isinstance(header, bytes):
        raw = header
    elif isinstance(header, str):
        raw = header.encode("utf-8")
    else:
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def _one(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8), **extra: Any) -> dict[str, Any]:
    e = {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape}
    e["data_offsets"] = list(offsets) if isinstance(offsets, tuple) else offsets
    e.update(extra)
    return e


def _valid_header() -> dict[str, Any]:
    return {"a": _one("F32", (2,), (0, 8)), "b": _one("F32", (2,), (8, 16))}


VALID_FILE = st_bytes(_valid_header(), bytes(16))


@dataclasses.dataclass(frozen=True)
class FileCase:
    """One malformed .safetensors file. expect: raised by open + reading every array."""

    id: str
    data: bytes
    expect: type[BaseException]


@dataclasses.dataclass(frozen=True)
class DirCase:
    """One checkpoint: build(tmp) writes it and returns the path for load_hf_dir(path, **kwargs)."""

    id: str
    build: Callable[[Path], Path]
    expect: type[BaseException] | None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    canary: str | None = None  # a file name under tmp that must never appear


def _f(id: str, data: bytes, expect: type[BaseException] = E.SafetensorsFormatError) -> FileCase:
    return FileCase(id, data, expect)


def _entry_cases(prefix: str, variants: Mapping[str, dict[str, Any]], data_len: int = 8) -> list[FileCase]:
    return [_f(f"{prefix}-{k}", st_bytes(h, bytes(data_len))) for k, h in variants.items()]


def file_cases() -> list[FileCase]:
    """Every malformed single-file case, F1-F8."""
    v = VALID_FILE
    n_valid = len(v) - 8 - 16
    cases = [
        # F1: too short
        _f("F1-empty", b""),
        _f("F1-7-bytes", bytes(7)),
        _f("F1-8-bytes-length-0", struct.pack("<Q", 0)),
        _f("F1-8-bytes-length-2", struct.pack("<Q", 2)),
        # F2: header length
        _f("F2-length-u64-max", struct.pack("<Q", 2**64 - 1) + v[8:]),
        _f("F2-length-2^63", struct.pack("<Q", 2**63) + v[8:]),
        _f("F2-length-filesize-minus-7", struct.pack("<Q", len(v) - 7) + v[8:]),
        _f("F2-length-100MB+1", struct.pack("<Q", 100_000_001) + v[8:]),
        _f("F2-length-one-short", struct.pack("<Q", n_valid - 1) + v[8:]),
        # F3: not UTF-8 / JSON / an object
        _f("F3-not-utf8", st_bytes(b'{"\xff\xfe":{}}')),
        _f("F3-not-json", st_bytes(b"{abc}")),
        _f("F3-list", st_bytes(b"[]")),
        _f("F3-leading-space", st_bytes(b" {}")),
        _f("F3-utf8-bom", st_bytes(b"\xef\xbb\xbf{}")),
        _f("F3-trailing-garbage", st_bytes(b"{}  xyz")),
        _f("F3-nul-padding", st_bytes(b"{}" + bytes(6))),
        _f("F3-nested-arrays-1e5", st_bytes('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")),
        _f("F3-nested-objects-1e5", st_bytes('{"a":' * 100_000 + "1" + "}" * 100_000)),
        _f(
            "F3-int-10000-digits", st_bytes('{"a":{"dtype":"F32","shape":[' + "9" * 10_000 + '],"data_offsets":[0,0]}}')
        ),
        _f("F3-nan-in-shape", st_bytes('{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}')),
        _f("F3-top-level-string-entry", st_bytes({"a": "F32"})),
        # F4: duplicates, metadata, fields
        _f(
            "F4-duplicate-tensor",
            st_bytes(
                '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                bytes(8),
            ),
        ),
        _f(
            "F4-duplicate-field",
            st_bytes('{"a":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}}', bytes(8)),
        ),
        _f(
            "F4-duplicate-metadata-key",
            st_bytes(
                '{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)
            ),
        ),
        _f("F4-metadata-int-value", st_bytes({"__metadata__": {"k": 1}, "a": _one()}, bytes(8))),
        _f("F4-metadata-null-value", st_bytes({"__metadata__": {"k": None}, "a": _one()}, bytes(8))),
        _f("F4-metadata-nested", st_bytes({"__metadata__": {"k": {"x": "y"}}, "a": _one()}, bytes(8))),
        _f("F4-metadata-list", st_bytes({"__metadata__": ["format", "pt"], "a": _one()}, bytes(8))),
        _f("F4-metadata-null", st_bytes({"__metadata__": None, "a": _one()}, bytes(8))),
        _f("F4-unknown-field", st_bytes({"a": _one(extra_field=1)}, bytes(8))),
        _f("F4-missing-dtype", st_bytes({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8))),
        _f("F4-missing-offsets", st_bytes({"a": {"dtype": "F32", "shape": [2]}}, bytes(8))),
        _f("F4-entry-is-list", st_bytes({"a": ["F32", [2], [0, 8]]}, bytes(8))),
        _f(
            "F4-lone-surrogate-name", st_bytes('{"\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8))
        ),
        _f("F4-lone-surrogate-metadata", st_bytes('{"__metadata__":{"k":"\\udfff"}}')),
    ]
    # F5: data_offsets
    cases += _entry_cases(
        "F5-offsets",
        {
            "negative": {"a": _one(offsets=(-8, 0))},
            "float": {"a": _one(offsets=(0.0, 8.0))},
            "string": {"a": _one(offsets=("0", "8"))},
            "bool": {"a": _one(dtype="U8", shape=(1,), offsets=(False, True))},
            "three-elements": {"a": _one(offsets=(0, 8, 8))},
            "one-element": {"a": _one(offsets=(8,))},
            "not-a-list": {"a": _one(offsets={"begin": 0, "end": 8})},
            "null": {"a": _one(offsets=None)},
            "end-before-begin": {"a": _one(offsets=(8, 0))},
            "hole-at-start": {"a": _one(dtype="F32", shape=(1,), offsets=(4, 8))},
            "past-eof": {"a": _one(offsets=(0, 8)), "b": _one(offsets=(8, 16))},
            "u64-max": {"a": _one(dtype="U8", shape=(1,), offsets=(2**64 - 2, 2**64 - 1))},
            "above-u64": {"a": _one(dtype="U8", shape=(1,), offsets=(2**64, 2**64 + 1))},
        },
    )
    cases += _entry_cases(
        "F5-offsets",
        {
            "hole": {"a": _one(offsets=(0, 8)), "b": _one(shape=(1,), offsets=(12, 16))},
            "overlap": {"a": _one(offsets=(0, 8)), "b": _one(offsets=(4, 12))},
            "same-span-twice": {"a": _one(offsets=(0, 8)), "b": _one(offsets=(0, 8)), "c": _one(offsets=(8, 16))},
            "zero-size-inside-another": {
                "a": _one(offsets=(0, 8)),
                "z": _one(shape=(0,), offsets=(4, 4)),
                "b": _one(offsets=(8, 16)),
            },
        },
        data_len=16,
    )
    # F6: shape / dtype versus span
    cases += _entry_cases(
        "F6",
        {
            "span-too-small-for-shape": {"a": _one(shape=(2, 2), offsets=(0, 8))},
            "dtype-size-mismatch": {"a": _one(dtype="F64", shape=(2,), offsets=(0, 8))},
            "numel-overflows-u64": {"a": _one(shape=(4194305, 4194305, 211106198978564), offsets=(0, 8))},
            "zero-dim-with-bytes": {"a": _one(shape=(0, 2), offsets=(0, 8))},
            "scalar-with-8-bytes": {"a": _one(shape=(), offsets=(0, 8))},
            "rank-17": {"a": _one(dtype="U8", shape=(1,) * 16 + (8,), offsets=(0, 8))},
            "negative-dim": {"a": _one(shape=(-2, -1), offsets=(0, 8))},
            "float-dim": {"a": _one(shape=(2.0,), offsets=(0, 8))},
            "bool-dim": {"a": _one(dtype="U8", shape=(True,), offsets=(0, 8))},
            "string-dim": {"a": _one(shape=("2",), offsets=(0, 8))},
            "shape-not-list": {"a": _one(shape=2, offsets=(0, 8))},
            "unknown-dtype": {"a": _one(dtype="Q4_0", offsets=(0, 8))},
            "lowercase-dtype": {"a": _one(dtype="f32", offsets=(0, 8))},
            "dtype-not-string": {"a": _one(dtype=32, offsets=(0, 8))},
            "sub-byte-misaligned": {"a": _one(dtype="F4", shape=(3,), offsets=(0, 8))},
        },
    )
    # F7: coverage of the buffer
    pickled = pickle.dumps({"payload": 1})
    cases += [
        _f("F7-trailing-pickle", v + pickled),
        _f("F7-trailing-byte", v + b"\x00"),
        _f("F7-truncated-1-byte", v[:-1]),
        _f("F7-truncated-mid-header", v[: 8 + n_valid // 2]),
        _f("F7-truncated-to-header", v[: 8 + n_valid]),
    ]
    # F8: parses, but the dtype has no numpy type
    cases += [
        _f(
            "F8-f8-e4m3-array",
            st_bytes({"a": _one(dtype="F8_E4M3", shape=(8,), offsets=(0, 8))}, bytes(8)),
            E.UnsupportedDTypeError,
        ),
        _f(
            "F8-f4-array",
            st_bytes({"a": _one(dtype="F4", shape=(16,), offsets=(0, 8))}, bytes(8)),
            E.UnsupportedDTypeError,
        ),
    ]
    return cases


# ----------------------------------------------------------------------------- checkpoint directories


def _ckpt(
    mutate: Callable[[dict[str, np.ndarray], dict[str, Any], dict[str, str]], None] | None = None, **kw: Any
) -> Callable[[Path], Path]:
    """A builder writing the tiny checkpoint after `mutate(tensors, config, dtypes)`."""

    def build(tmp: Path) -> Path:
        config = json.loads(json.dumps(TINY_CONFIG))
        tensors = tiny_tensors(config)
        dtypes: dict[str, str] = {}
        if mutate is not None:
            mutate(tensors, config, dtypes)
        return write_checkpoint(tmp / "model", config=config, tensors=tensors, dtypes=dtypes, **kw)

    return build


def _with_config(change: Mapping[str, Any] | Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    """A valid tiny checkpoint whose config.json is then rewritten."""

    def build(tmp: Path) -> Path:
        d = write_checkpoint(tmp / "model")
        cfg = json.loads(json.dumps(TINY_CONFIG))
        if callable(change):
            change(cfg)
        else:
            cfg.update(change)
        write_config(d, cfg)
        return d

    return build


def _raw_config(raw: str | bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        d = write_checkpoint(tmp / "model")
        write_config(d, raw)
        return d

    return build


def _set(name: str, array: np.ndarray, dtype: str | None = None) -> Callable[..., None]:
    def mutate(t: dict[str, np.ndarray], c: dict[str, Any], dt: dict[str, str]) -> None:
        t[name] = array
        if dtype is not None:
            dt[name] = dtype

    return mutate


def _drop(*names: str, config: Mapping[str, Any] | None = None) -> Callable[..., None]:
    def mutate(t: dict[str, np.ndarray], c: dict[str, Any], dt: dict[str, str]) -> None:
        c.update(config or {})
        for n in names:
            t.pop(n)

    return mutate


def _rename(old: str, new: str) -> Callable[..., None]:
    def mutate(t: dict[str, np.ndarray], c: dict[str, Any], dt: dict[str, str]) -> None:
        t[new] = t.pop(old)

    return mutate


def _no_config(tmp: Path) -> Path:
    d = write_checkpoint(tmp / "model")
    (d / "config.json").unlink()
    return d


def _untied(extra: Callable[..., None] | None = None, lm_head: bool = True) -> Callable[..., None]:
    def mutate(t: dict[str, np.ndarray], c: dict[str, Any], dt: dict[str, str]) -> None:
        c["tie_word_embeddings"] = False
        if lm_head:
            t["lm_head.weight"] = np.ones((256, 64), np.float32)
        if extra is not None:
            extra(t, c, dt)

    return mutate


def _nonfinite(name: str, value: float, dtype: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        t = tiny_tensors(dtype=dtype)
        bad = t[name].copy()
        if dtype == "BF16":
            bad.reshape(-1)[5] = to_bf16_bits(np.array([value], np.float32))[0]
        else:
            bad.reshape(-1)[5] = value
        t[name] = bad
        return write_checkpoint(tmp / "model", tensors=t)

    return build


def _sharded(edit: Callable[[Path, dict[str, str]], None]) -> Callable[[Path], Path]:
    """A 3-shard tiny checkpoint; edit(dir, weight_map) may move files and returns nothing."""

    def build(tmp: Path) -> Path:
        d = write_checkpoint(tmp / "model", n_shards=3)
        wm = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
        edit(d, wm)
        return d

    return build


def _index_escape(target: str, absolute: bool = False) -> Callable[[Path, dict[str, str]], None]:
    def edit(d: Path, wm: dict[str, str]) -> None:
        shard = "model-00003-of-00003.safetensors"
        outside = d.parent / "outside.safetensors"
        shutil.move(d / shard, outside)  # a valid shard, reachable only by escaping the directory
        name = str(outside) if absolute else target
        write_index(d, {k: (name if v == shard else v) for k, v in wm.items()})

    return edit


def _index_text(text: str) -> Callable[[Path, dict[str, str]], None]:
    return lambda d, wm: write_index(d, None, text)


def _index_map(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, dict[str, str]], None]:
    def edit(d: Path, wm: dict[str, str]) -> None:
        write_index(d, change(dict(wm)))

    return edit


def _remove_shard(d: Path, wm: dict[str, str]) -> None:
    (d / "model-00002-of-00003.safetensors").unlink()


def _duplicate_across_shards(d: Path, wm: dict[str, str]) -> None:
    # Rewrite shard 2 so it also holds a tensor that shard 1 defines.
    from llama32_native.loading.safetensors import SafetensorsFile

    p1, p2 = d / "model-00001-of-00003.safetensors", d / "model-00002-of-00003.safetensors"
    with SafetensorsFile(p1) as f1, SafetensorsFile(p2) as f2:
        stolen = next(iter(f1.entries))
        arrays = {n: np.array(f2.array(n)) for n in f2.entries}
        arrays[stolen] = np.array(f1.array(stolen))
    write_safetensors(p2, arrays)


def _listed_but_absent(d: Path, wm: dict[str, str]) -> None:
    # Point one tensor at a shard that exists but does not hold it.
    name = "model.layers.0.mlp.up_proj.weight"
    shards = sorted(set(wm.values()))
    write_index(d, dict(wm, **{name: next(s for s in shards if s != wm[name])}))


def canary_pickle(path: str | os.PathLike[str]) -> bytes:
    """A pickle whose loading creates `path` (builtins open(path, "w")): proof it was never unpickled."""
    p = os.fspath(path).encode("utf-8")
    return b"\x80\x02cio\nopen\nX" + struct.pack("<I", len(p)) + p + b"X\x01\x00\x00\x00w\x86R."


def _pickle_dir(files: Mapping[str, str], config: bool = True, load: str = "") -> Callable[[Path], Path]:
    """A directory holding pickle checkpoints (canary pickles) under the given names."""

    def build(tmp: Path) -> Path:
        d = tmp / "model"
        d.mkdir(parents=True, exist_ok=True)
        if config:
            write_config(d, TINY_CONFIG)
        for name, kind in files.items():
            if kind == "pickle":
                data = canary_pickle(tmp / "CANARY")
            elif kind == "zip":
                data = b"PK\x03\x04" + bytes(60) + canary_pickle(tmp / "CANARY")
            else:
                data = kind.encode()
            (d / name).write_bytes(data)
        return d / load if load else d

    return build


def _special(kind: str) -> Callable[[Path], Path]:
    """model.safetensors replaced by a non-regular file (F14)."""

    def build(tmp: Path) -> Path:
        d = write_checkpoint(tmp / "model")
        p = d / "model.safetensors"
        p.unlink()
        if kind == "directory":
            p.mkdir()
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "dev-zero":
            p.symlink_to("/dev/zero")
        elif kind == "symlink-loop":
            p.symlink_to(p.name)
        elif kind == "config-fifo":
            write_checkpoint(d)
            (d / "config.json").unlink()
            os.mkfifo(d / "config.json")
        return d

    return build


def dir_cases() -> list[DirCase]:
    """Every checkpoint-level case, F8-F15 (F12 with and without check_tensors)."""
    q0, k0 = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    down1 = "model.layers.1.mlp.down_proj.weight"
    u8 = np.zeros((64, 64), np.uint8)
    C, D = E.ConfigError, DirCase
    cases = [
        # F8: dtypes not usable for a weight
        D("F8-weight-f8-e4m3", _ckpt(_set(q0, u8, "F8_E4M3")), E.UnsupportedDTypeError),
        D("F8-weight-i64", _ckpt(_set(q0, np.zeros((64, 64), np.int64))), E.UnsupportedDTypeError),
        D("F8-weight-bool", _ckpt(_set(q0, np.zeros((64, 64), np.bool_))), E.UnsupportedDTypeError),
        D("F8-weight-f64", _ckpt(_set(q0, np.zeros((64, 64), np.float64))), E.UnsupportedDTypeError),
        D("F8-weight-u8", _ckpt(_set(q0, u8)), E.UnsupportedDTypeError),
        D("F8-norm-i32", _ckpt(_set("model.norm.weight", np.zeros(64, np.int32))), E.UnsupportedDTypeError),
        # F9: missing / unexpected tensors
        D("F9-missing-last-down-proj", _ckpt(_drop(down1)), E.MissingTensorError),
        D("F9-missing-embed", _ckpt(_drop("model.embed_tokens.weight")), E.MissingTensorError),
        D("F9-missing-final-norm", _ckpt(_drop("model.norm.weight")), E.MissingTensorError),
        D("F9-missing-layer0-norm", _ckpt(_drop("model.layers.0.input_layernorm.weight")), E.MissingTensorError),
        D("F9-untied-lm-head-absent", _ckpt(_untied(lm_head=False)), E.MissingTensorError),
        D(
            "F9-tied-embed-absent-lm-head-present",
            _ckpt(_rename("model.embed_tokens.weight", "lm_head.weight")),
            E.MissingTensorError,
        ),
        D(
            "F9-extra-q-bias",
            _ckpt(_set("model.layers.0.self_attn.q_proj.bias", np.zeros(64, np.float32))),
            E.UnexpectedTensorError,
        ),
        D("F9-extra-unknown-name", _ckpt(_set("model.foo", np.zeros(4, np.float32))), E.UnexpectedTensorError),
        D(
            "F9-extra-layer-beyond-config",
            _ckpt(_set("model.layers.2.mlp.down_proj.weight", np.zeros((64, 128), np.float32))),
            E.UnexpectedTensorError,
        ),
        D(
            "F9-layer-index-leading-zero",
            _ckpt(_set("model.layers.01.mlp.down_proj.weight", np.zeros((64, 128), np.float32))),
            E.UnexpectedTensorError,
        ),
        D(
            "F9-layer-index-negative",
            _ckpt(_set("model.layers.-1.mlp.down_proj.weight", np.zeros((64, 128), np.float32))),
            E.UnexpectedTensorError,
        ),
        D("F9-tied-lm-head-present-loads", _ckpt(_set("lm_head.weight", np.ones((256, 64), np.float32))), None),
        D(
            "F9-rotary-inv-freq-ignored",
            _ckpt(_set("model.layers.0.self_attn.rotary_emb.inv_freq", np.ones(8, np.float32))),
            None,
        ),
        D("F9-untied-loads", _ckpt(_untied()), None),
        # F10: shapes
        D("F10-k-proj-transposed", _ckpt(_set(k0, np.zeros((64, 32), np.float32))), E.TensorShapeError),
        D(
            "F10-embed-257-rows",
            _ckpt(_set("model.embed_tokens.weight", np.zeros((257, 64), np.float32))),
            E.TensorShapeError,
        ),
        D("F10-q-proj-flattened", _ckpt(_set(q0, np.zeros(64 * 64, np.float32))), E.TensorShapeError),
        D("F10-q-proj-rank-9", _ckpt(_set(q0, np.zeros((4, 4, 4, 4, 4, 4, 1, 1, 1), np.float32))), E.TensorShapeError),
        D("F10-norm-too-long", _ckpt(_set("model.norm.weight", np.zeros(65, np.float32))), E.TensorShapeError),
        D("F10-norm-scalar", _ckpt(_set("model.norm.weight", np.zeros((), np.float32))), E.TensorShapeError),
        D(
            "F10-empty-gate",
            _ckpt(_set("model.layers.0.mlp.gate_proj.weight", np.zeros((0, 64), np.float32))),
            E.TensorShapeError,
        ),
        D(
            "F10-untied-lm-head-wrong",
            _ckpt(_untied(_set("lm_head.weight", np.zeros((64, 256), np.float32)))),
            E.TensorShapeError,
        ),
        D("F10-tied-lm-head-wrong", _ckpt(_set("lm_head.weight", np.zeros((255, 64), np.float32))), E.TensorShapeError),
        # F11: config.json lies
        D(
            "F11-hidden-not-divisible-by-heads",
            _with_config(lambda c: (c.update(hidden_size=66), c.pop("head_dim"))),
            C,
        ),
        D("F11-kv-heads-not-dividing-heads", _with_config({"num_key_value_heads": 3}), C),
        D("F11-max-positions-2^40", _with_config({"max_position_embeddings": 2**40}), C),
        D(
            "F11-rms-eps-nan",
            _raw_config(json.dumps(TINY_CONFIG).replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN')),
            C,
        ),
        D("F11-rms-eps-negative", _with_config({"rms_norm_eps": -1}), C),
        D("F11-rope-theta-zero", _with_config({"rope_theta": 0}), C),
        D("F11-unknown-rope-type", _with_config(lambda c: c["rope_scaling"].update(rope_type="yarn")), C),
        D("F11-missing-num-layers", _with_config(lambda c: c.pop("num_hidden_layers")), C),
        D("F11-hidden-size-string", _with_config({"hidden_size": "64"}), C),
        D("F11-layers-float", _with_config({"num_hidden_layers": 2.5}), C),
        D("F11-layers-bool", _with_config({"num_hidden_layers": True}), C),
        D("F11-layers-negative", _with_config({"num_hidden_layers": -1}), C),
        D("F11-vocab-zero", _with_config({"vocab_size": 0}), C),
        D("F11-model-type-mistral", _with_config({"model_type": "mistral"}), C),
        D("F11-huge-file", _raw_config('{"pad": "' + "x" * (2 << 20) + '"}'), C),
        D("F11-not-an-object", _raw_config("[1, 2, 3]"), C),
        D("F11-not-json", _raw_config("{hidden_size: 64"), C),
        D("F11-not-utf8", _raw_config(b'{"hidden_size": "\xff"}'), C),
        D("F11-nested-1e5", _raw_config("[" * 100_000 + "]" * 100_000), C),
        D("F11-layers-more-than-present", _with_config({"num_hidden_layers": 3}), E.MissingTensorError),
        D("F11-layers-fewer-than-present", _with_config({"num_hidden_layers": 1}), E.UnexpectedTensorError),
        D("F11-vocab-not-rows", _with_config({"vocab_size": 128257}), E.TensorShapeError),
        D("F11-head-dim-wrong", _with_config({"head_dim": 8}), E.TensorShapeError),
        D("F11-tie-false-no-lm-head", _with_config({"tie_word_embeddings": False}), E.MissingTensorError),
        D("F11-config-missing", _no_config, E.ModelLoadError),
        # F12: non-finite weights load unless check_tensors=True
        D("F12-nan-f32-unchecked", _nonfinite(q0, np.nan, "F32"), None),
        D("F12-nan-f32", _nonfinite(q0, np.nan, "F32"), E.NonFiniteWeightsError, {"check_tensors": True}),
        D("F12-inf-f16", _nonfinite(down1, np.inf, "F16"), E.NonFiniteWeightsError, {"check_tensors": True}),
        D(
            "F12-neg-inf-bf16",
            _nonfinite("model.norm.weight", -np.inf, "BF16"),
            E.NonFiniteWeightsError,
            {"check_tensors": True},
        ),
        D(
            "F12-nan-bf16-embed",
            _nonfinite("model.embed_tokens.weight", np.nan, "BF16"),
            E.NonFiniteWeightsError,
            {"check_tensors": True},
        ),
        D(
            "F12-finite-bf16-checked",
            lambda tmp: write_checkpoint(tmp / "model", tensors=tiny_tensors(dtype="BF16")),
            None,
            {"check_tensors": True},
        ),
        # F13: sharded checkpoints
        D("F13-sharded-loads", _sharded(lambda d, wm: None), None),
        D("F13-index-dotdot", _sharded(_index_escape("../outside.safetensors")), E.ModelLoadError),
        D("F13-index-dotdot-nested", _sharded(_index_escape("sub/../../outside.safetensors")), E.ModelLoadError),
        D("F13-index-absolute", _sharded(_index_escape("", absolute=True)), E.ModelLoadError),
        D("F13-index-backslash", _sharded(_index_escape("..\\outside.safetensors")), E.ModelLoadError),
        D("F13-index-nul", _sharded(_index_escape("outside\x00.safetensors")), E.ModelLoadError),
        D("F13-index-empty-name", _sharded(_index_escape("")), E.ModelLoadError),
        D("F13-index-shard-not-safetensors", _sharded(_index_escape("weights.npy")), E.ModelLoadError),
        D("F13-missing-shard", _sharded(_remove_shard), E.MissingTensorError),
        D("F13-tensor-in-two-shards", _sharded(_duplicate_across_shards), E.UnexpectedTensorError),
        D("F13-listed-in-wrong-shard", _sharded(_listed_but_absent), E.MissingTensorError),
        D("F13-index-not-json", _sharded(_index_text("{weight_map")), E.ModelLoadError),
        D("F13-index-duplicate-key", _sharded(_index_text('{"weight_map": {}, "weight_map": {}}')), E.ModelLoadError),
        D("F13-index-no-weight-map", _sharded(_index_text('{"metadata": {}}')), E.ModelLoadError),
        D("F13-index-is-list", _sharded(_index_text("[]")), E.ModelLoadError),
        D("F13-index-shard-int", _sharded(_index_map(lambda wm: {k: 1 for k in wm})), E.ModelLoadError),
        D("F13-index-nested-1e5", _sharded(_index_text("[" * 100_000 + "]" * 100_000)), E.ModelLoadError),
        # F14: non-regular files
        D("F14-weights-directory", _special("directory"), E.ModelLoadError),
        D("F14-weights-fifo", _special("fifo"), E.ModelLoadError),
        D("F14-weights-dev-zero", _special("dev-zero"), E.ModelLoadError),
        D("F14-weights-symlink-loop", _special("symlink-loop"), E.ModelLoadError),
        D("F14-config-fifo", _special("config-fifo"), E.ModelLoadError),
        # F15: pickle checkpoints are refused and never unpickled
        D(
            "F15-dir-with-pytorch-model-bin",
            _pickle_dir({"pytorch_model.bin": "pickle"}),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-path-to-bin",
            _pickle_dir({"pytorch_model.bin": "pickle"}, load="pytorch_model.bin"),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-path-to-pth",
            _pickle_dir({"consolidated.00.pth": "zip"}, load="consolidated.00.pth"),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-dir-with-pth-only",
            _pickle_dir({"consolidated.00.pth": "zip", "params.json": "{}"}, config=False),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-bin-index-only",
            _pickle_dir(
                {"pytorch_model.bin.index.json": '{"weight_map": {}}', "pytorch_model-00001-of-00001.bin": "pickle"}
            ),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-path-to-bin-index",
            _pickle_dir(
                {
                    "pytorch_model.bin.index.json": '{"weight_map": {"a": "pytorch_model-00001-of-00001.bin"}}',
                    "pytorch_model-00001-of-00001.bin": "pickle",
                },
                load="pytorch_model.bin.index.json",
            ),
            E.ModelLoadError,
            canary="CANARY",
        ),
        D(
            "F15-pickle-named-safetensors",
            _pickle_dir({"model.safetensors": "pickle"}),
            E.SafetensorsFormatError,
            canary="CANARY",
        ),
        D(
            "F15-torch-zip-named-safetensors",
            _pickle_dir({"model.safetensors": "zip"}),
            E.SafetensorsFormatError,
            canary="CANARY",
        ),
    ]
    return cases


# ----------------------------------------------------------------------------- script


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for fc in file_cases():
        (out / f"{fc.id}.safetensors").write_bytes(fc.data)
    for dc in dir_cases():
        if dc.id.startswith("F14"):
            continue  # FIFOs and device links do not belong in a corpus
        dc.build(out / dc.id)
    (out / "valid.safetensors").write_bytes(VALID_FILE)
    print(f"wrote {len(file_cases())} files and directory cases under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
