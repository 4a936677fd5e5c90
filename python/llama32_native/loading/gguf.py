"""GGUF reader: a bounds-checked parser over an mmap, and the llama-architecture importer.

Contract: `read_gguf` checks every count, length, dim, type and offset against the bytes left in
the file before it allocates anything for it (docs/FORMATS.md, "GGUF") and raises `GGUFFormatError`
naming the key or tensor at fault. `load_gguf` maps a llama GGUF to `LlamaConfig` plus tensors in
the package's layout: PyTorch [out, in] shapes and Hugging Face's half-split RoPE rows for q/k.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from typing import Any

import numpy as np

from ..config import LlamaConfig
from ..errors import (
    ConfigError,
    GGUFFormatError,
    MissingTensorError,
    TensorShapeError,
    UnexpectedTensorError,
    UnsupportedDTypeError,
)
from ..files import map_regular
from ..memory import Budget, check_memory
from ..schema import tensor_shapes
from ..tokenizer import END_OF_GENERATION_NAMES
from . import Tensor
from .gguf_dequant import GGML_TYPES, dequantize
from .gguf_native import to_native

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20  # far above any real writer's choice (32); keeps padding arithmetic sane
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the NUL
MAX_KEY_BYTES = 65535
MAX_ARRAY_NESTING = 4
INT64_MAX = (1 << 63) - 1

# GGUF metadata value types (ggml docs/gguf.md)
VT_UINT8, VT_INT8, VT_UINT16, VT_INT16, VT_UINT32, VT_INT32, VT_FLOAT32 = range(7)
VT_BOOL, VT_STRING, VT_ARRAY, VT_UINT64, VT_INT64, VT_FLOAT64 = range(7, 13)
VALUE_TYPE_NAMES = {
    VT_UINT8: "u8",
    VT_INT8: "i8",
    VT_UINT16: "u16",
    VT_INT16: "i16",
    VT_UINT32: "u32",
    VT_INT32: "i32",
    VT_FLOAT32: "f32",
    VT_BOOL: "bool",
    VT_STRING: "string",
    VT_ARRAY: "array",
    VT_UINT64: "u64",
    VT_INT64: "i64",
    VT_FLOAT64: "f64",
}
INTEGER_TYPES = frozenset({VT_UINT8, VT_INT8, VT_UINT16, VT_INT16, VT_UINT32, VT_INT32, VT_UINT64, VT_INT64})
FLOAT_TYPES = frozenset({VT_FLOAT32, VT_FLOAT64})
# fixed-size scalar value types: little-endian NumPy dtype (for arrays) and struct code
_SCALAR_DTYPES = {
    VT_UINT8: "<u1",
    VT_INT8: "<i1",
    VT_UINT16: "<u2",
    VT_INT16: "<i2",
    VT_UINT32: "<u4",
    VT_INT32: "<i4",
    VT_FLOAT32: "<f4",
    VT_BOOL: "<u1",
    VT_UINT64: "<u8",
    VT_INT64: "<i8",
    VT_FLOAT64: "<f8",
}
_SCALAR_STRUCTS = {
    vt: struct.Struct("<" + code)
    for vt, code in zip(_SCALAR_DTYPES, ("B", "b", "H", "h", "I", "i", "f", "B", "Q", "q", "d"))
}
# the fewest bytes one encoded value of a type can take (strings: length prefix; arrays: header)
_MIN_VALUE_BYTES = {**{vt: np.dtype(dt).itemsize for vt, dt in _SCALAR_DTYPES.items()}, VT_STRING: 8, VT_ARRAY: 12}

_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# ------------------------------------------------------------------------------------ data model
@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor-info record, validated against the file."""

    name: str
    dims: tuple[int, ...]  # GGUF order: innermost (contiguous) first
    ggml_type: int
    offset: int  # relative to the start of the data section
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]

    @property
    def shape(self) -> tuple[int, ...]:
        """PyTorch order (outermost first): the reverse of `dims`."""
        return tuple(reversed(self.dims))


@dataclasses.dataclass
class GGUFFile:
    """A parsed GGUF file. Tensor data stays in the mmap; `tensor_bytes` returns views of it.

    `metadata` values: int, float, bool, str; arrays of numbers or bools as 1-D NumPy arrays
    (native byte order), arrays of strings as list[str], nested arrays as lists.
    """

    path: str
    version: int
    alignment: int
    metadata: dict[str, Any]
    value_types: dict[str, tuple[int, ...]]  # key -> (type,) or (VT_ARRAY, elem type, ...)
    tensors: dict[str, GGUFTensorInfo]  # in file order
    data_offset: int
    file_size: int
    _buffer: np.ndarray | None = dataclasses.field(default=None, repr=False)
    _mmap: mmap.mmap | None = dataclasses.field(default=None, repr=False)

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The raw bytes of tensor `name`: a read-only uint8 view of the mapped file."""
        if self._buffer is None:
            raise GGUFFormatError(f"{self.path}: file is closed")
        info = self.tensors[name]
        start = self.data_offset + info.offset
        return self._buffer[start : start + info.n_bytes]

    def close(self) -> None:
        """Release the mapping; views already handed out stay valid and keep it alive until freed."""
        self._buffer = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # exported views remain; the mapping goes when they are collected
                pass
            self._mmap = None

    def __enter__(self) -> GGUFFile:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ cursor
class _Cursor:
    """Sequential little-endian reads over a buffer; every read is checked against the end."""

    def __init__(self, buf: Any, size: int, path: str):
        self.buf = buf
        self.size = size
        self.pos = 0
        self.path = path

    def fail(self, msg: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: {msg}")

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.remaining:
            raise self.fail(f"{what}: needs {n} bytes at offset {self.pos}, file has {self.remaining} left")

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def raw_string(self, what: str, max_len: int | None = None) -> bytes:
        n = self.u64(f"{what} length")
        if max_len is not None and n > max_len:
            raise self.fail(f"{what}: length {n} exceeds the limit of {max_len} bytes")
        self.need(n, what)
        data = self.buf[self.pos : self.pos + n]  # mmap slicing copies just these bytes
        self.pos += n
        return data

    def string(self, what: str, max_len: int | None = None) -> str:
        data = self.raw_string(what, max_len)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what}: not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def check_count(self, count: int, unit_bytes: int, what: str) -> None:
        """Reject a count whose smallest possible encoding cannot fit in what is left."""
        if count > INT64_MAX or count * unit_bytes > self.remaining:
            raise self.fail(
                f"{what}: count {count} cannot fit in the {self.remaining} bytes left "
                f"(at least {unit_bytes} bytes each)"
            )


# ------------------------------------------------------------------------------------ metadata values
def _read_value(cur: _Cursor, vtype: int, what: str, depth: int = 0) -> tuple[Any, tuple[int, ...]]:
    """One metadata value of type `vtype` -> (python value, type signature)."""
    if vtype == VT_STRING:
        return cur.string(what), (VT_STRING,)
    if vtype == VT_ARRAY:
        return _read_array(cur, what, depth)
    if vtype not in _SCALAR_STRUCTS:
        raise cur.fail(f"{what}: unknown value type {vtype}")
    value = cur.unpack(_SCALAR_STRUCTS[vtype], what)
    if vtype == VT_BOOL:
        if value not in (0, 1):
            raise cur.fail(f"{what}: bool byte is {value}, expected 0 or 1")
        value = bool(value)
    return value, (vtype,)


def _read_array(cur: _Cursor, what: str, depth: int) -> tuple[Any, tuple[int, ...]]:
    if depth >= MAX_ARRAY_NESTING:
        raise cur.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_NESTING}")
    etype = cur.u32(f"{what} element type")
    if etype not in _MIN_VALUE_BYTES:
        raise cur.fail(f"{what}: unknown array element type {etype}")
    count = cur.u64(f"{what} element count")
    cur.check_count(count, _MIN_VALUE_BYTES[etype], what)
    if etype in _SCALAR_DTYPES:
        # a NumPy copy, not a list: memory stays equal to the bytes in the file
        arr = np.frombuffer(cur.buf, dtype=_SCALAR_DTYPES[etype], count=count, offset=cur.pos)
        cur.pos += arr.nbytes
        if etype == VT_BOOL:
            if arr.size and int(arr.max()) > 1:
                raise cur.fail(f"{what}: bool array holds a byte other than 0 or 1")
            return arr.astype(np.bool_), (VT_ARRAY, etype)
        return arr.astype(arr.dtype.newbyteorder("=")), (VT_ARRAY, etype)
    if etype == VT_STRING:
        return [cur.string(f"{what}[{i}]") for i in range(count)], (VT_ARRAY, VT_STRING)
    items = [_read_array(cur, f"{what}[{i}]", depth + 1)[0] for i in range(count)]
    return items, (VT_ARRAY, VT_ARRAY)


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    # key length prefix (8) + value type (4) + the smallest value (1)
    cur.check_count(n_kv, 13, "metadata_kv_count")
    metadata: dict[str, Any] = {}
    types: dict[str, tuple[int, ...]] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}", MAX_KEY_BYTES)
        if not key:
            raise cur.fail(f"metadata key #{i} is empty")
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        vtype = cur.u32(f"value type of {key!r}")
        metadata[key], types[key] = _read_value(cur, vtype, f"metadata {key!r}")
    return metadata, types


# The types well-known keys must have (a tokenizer array of the wrong element type is G1 / #26690).
_STR, _INT, _BOOL = ("string",), ("integer",), ("bool",)
_STR_ARRAY, _INT_ARRAY, _FLOAT_ARRAY = ("array", "string"), ("array", "integer"), ("array", "float")
_KEY_SCHEMA: dict[str, tuple[str, ...]] = {
    "general.architecture": _STR,
    "general.alignment": _INT,
    "general.file_type": _INT,
    "general.quantization_version": _INT,
    "tokenizer.ggml.model": _STR,
    "tokenizer.ggml.pre": _STR,
    "tokenizer.ggml.tokens": _STR_ARRAY,
    "tokenizer.ggml.merges": _STR_ARRAY,
    "tokenizer.ggml.token_type": _INT_ARRAY,
    "tokenizer.ggml.scores": _FLOAT_ARRAY,
    "tokenizer.ggml.bos_token_id": _INT,
    "tokenizer.ggml.eos_token_id": _INT,
    "tokenizer.ggml.eot_token_id": _INT,
    "tokenizer.ggml.eom_token_id": _INT,
    "tokenizer.ggml.unknown_token_id": _INT,
    "tokenizer.ggml.padding_token_id": _INT,
    "tokenizer.ggml.separator_token_id": _INT,
    "tokenizer.ggml.add_bos_token": _BOOL,
    "tokenizer.ggml.add_eos_token": _BOOL,
    "tokenizer.ggml.add_space_prefix": _BOOL,
    "tokenizer.chat_template": _STR,
}


def _type_matches(sig: tuple[int, ...], want: tuple[str, ...]) -> bool:
    def one(vt: int, name: str) -> bool:
        return {
            "string": vt == VT_STRING,
            "integer": vt in INTEGER_TYPES,
            "float": vt in FLOAT_TYPES,
            "bool": vt == VT_BOOL,
        }[name]

    if want[0] == "array":
        return len(sig) == 2 and sig[0] == VT_ARRAY and one(sig[1], want[1])
    return len(sig) == 1 and one(sig[0], want[0])


def _describe(sig: tuple[int, ...]) -> str:
    """(VT_ARRAY, VT_STRING) -> "string[]"."""
    if sig[0] == VT_ARRAY and len(sig) > 1:
        return _describe(sig[1:]) + "[]"
    return VALUE_TYPE_NAMES.get(sig[0], str(sig[0]))


def _check_schema(path: str, metadata: dict[str, Any], types: dict[str, tuple[int, ...]]) -> None:
    for key, want in _KEY_SCHEMA.items():
        if key in types and not _type_matches(types[key], want):
            raise GGUFFormatError(
                f"{path}: metadata {key!r} has type {_describe(types[key])}, expected {' of '.join(want)}"
            )
    tokens = metadata.get("tokenizer.ggml.tokens")
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        if key in metadata and (tokens is None or len(metadata[key]) != len(tokens)):
            n_tok = "no" if tokens is None else len(tokens)
            raise GGUFFormatError(f"{path}: metadata {key!r} has {len(metadata[key])} entries for {n_tok} tokens")
    for key, value in metadata.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and isinstance(value, int) and value < 0:
            raise GGUFFormatError(f"{path}: metadata {key!r} = {value} is negative")


def _alignment(path: str, metadata: dict[str, Any]) -> int:
    a = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not (8 <= a <= MAX_ALIGNMENT and a & (a - 1) == 0):
        raise GGUFFormatError(f"{path}: general.alignment = {a} must be a power of two in [8, {MAX_ALIGNMENT}]")
    return a


# ------------------------------------------------------------------------------------ tensor infos
def _read_tensor_info(cur: _Cursor, index: int) -> GGUFTensorInfo:
    name = cur.string(f"tensor #{index} name", MAX_TENSOR_NAME_BYTES)
    where = f"tensor {name!r}"
    if not name:
        raise cur.fail(f"tensor #{index} has an empty name")
    n_dims = cur.u32(f"{where} n_dims")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"{where}: n_dims = {n_dims}, expected 1..{MAX_DIMS}")
    cur.need(8 * n_dims, f"{where} dims")
    dims = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.pos)
    cur.pos += 8 * n_dims
    ggml_type = cur.u32(f"{where} type")
    offset = cur.u64(f"{where} offset")
    if ggml_type not in GGML_TYPES:
        raise cur.fail(f"{where}: unknown ggml type id {ggml_type}")
    type_name, block_elems, block_bytes = GGML_TYPES[ggml_type]
    n_elements = 1
    for d in dims:
        if not 0 < d <= INT64_MAX:
            raise cur.fail(f"{where}: dimension {d} in {list(dims)} must be in [1, 2^63-1]")
        n_elements *= d
        if n_elements > INT64_MAX:
            raise cur.fail(f"{where}: dims {list(dims)} overflow the element count")
    if dims[0] % block_elems != 0:
        raise cur.fail(f"{where}: ne[0] = {dims[0]} is not a multiple of the {type_name} block ({block_elems})")
    n_bytes = n_elements // block_elems * block_bytes
    return GGUFTensorInfo(name, tuple(dims), ggml_type, offset, n_elements, n_bytes)


def _read_tensor_infos(cur: _Cursor, n_tensors: int) -> dict[str, GGUFTensorInfo]:
    # name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8)
    cur.check_count(n_tensors, 32, "tensor_count")
    infos: dict[str, GGUFTensorInfo] = {}
    for i in range(n_tensors):
        info = _read_tensor_info(cur, i)
        if info.name in infos:
            raise cur.fail(f"duplicate tensor name {info.name!r}")
        infos[info.name] = info
    return infos


def _check_tensor_placement(
    path: str, infos: dict[str, GGUFTensorInfo], data_offset: int, file_size: int, alignment: int
) -> None:
    data_size = file_size - data_offset
    if infos and data_size < 0:
        raise GGUFFormatError(f"{path}: tensor data section starts at {data_offset}, past the end ({file_size})")
    for info in infos.values():
        if info.offset % alignment != 0:
            raise GGUFFormatError(f"{path}: tensor {info.name!r} offset {info.offset} is not a multiple of {alignment}")
        if info.offset > data_size or info.n_bytes > data_size - info.offset:
            raise GGUFFormatError(
                f"{path}: tensor {info.name!r} spans [{info.offset}, {info.offset + info.n_bytes}) of the data "
                f"section, which holds {data_size} bytes (truncated file?)"
            )
    spans = sorted((i.offset, i.offset + i.n_bytes, i.name) for i in infos.values())
    for (_, end, prev), (start, _, name) in zip(spans, spans[1:]):
        if start < end:
            raise GGUFFormatError(f"{path}: tensors {prev!r} and {name!r} overlap")


# ------------------------------------------------------------------------------------ read_gguf
def _check_version(path: str, version: int) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if version == 1:
        raise GGUFFormatError(f"{path}: GGUF version 1 is not supported (32-bit lengths); re-convert the model")
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in (1, 2, 3):
        raise GGUFFormatError(
            f"{path}: GGUF version field is byte-swapped ({version:#x}): big-endian files are not supported"
        )
    raise GGUFFormatError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")


def _open_mapping(path: str) -> tuple[mmap.mmap, int]:
    mm = map_regular(path, "GGUF file", GGUFFormatError)
    size = len(mm)
    if size < _HEADER.size:
        mm.close()
        raise GGUFFormatError(f"{path}: {size} bytes is too short for a GGUF header ({_HEADER.size})")
    return mm, size


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse and validate the header, metadata and tensor infos of a GGUF file (data stays mapped)."""
    path = os.fspath(path)
    mm, size = _open_mapping(path)
    try:
        return _parse(mm, size, path)
    except BaseException:
        try:
            mm.close()
        except BufferError:  # a view made while parsing is still referenced; GC unmaps it
            pass
        raise


def _parse(mm: mmap.mmap, size: int, path: str) -> GGUFFile:
    cur = _Cursor(mm, size, path)
    magic, version, n_tensors, n_kv = _HEADER.unpack_from(mm, 0)
    cur.pos = _HEADER.size
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"{path}: bad magic {magic!r}, expected {GGUF_MAGIC!r}")
    _check_version(path, version)
    # bound both counts by the file before either loop runs
    cur.check_count(n_tensors, 32, "tensor_count")
    cur.check_count(n_kv, 13, "metadata_kv_count")
    metadata, types = _read_metadata(cur, n_kv)
    _check_schema(path, metadata, types)
    alignment = _alignment(path, metadata)
    infos = _read_tensor_infos(cur, n_tensors)
    data_offset = cur.pos + (alignment - cur.pos % alignment) % alignment
    _check_tensor_placement(path, infos, data_offset, size, alignment)
    buffer = np.frombuffer(mm, dtype=np.uint8)
    return GGUFFile(path, version, alignment, metadata, types, infos, data_offset, size, buffer, mm)


# ------------------------------------------------------------------------------------ llama import
# GGUF name (without ".weight") -> internal name, for the non-layer tensors
_GLOBAL_TENSORS = {"token_embd": "tok_embd", "output_norm": "output_norm", "output": "output"}
_KEPT_QUANT = {"Q4_0": "q4_0", "Q8_0": "q8_0"}
_DEQUANTIZED = frozenset({"Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"})
TOKEN_TYPE_CONTROL = 3


def _meta_int(g: GGUFFile, key: str, default: int | None = None) -> int:
    if key not in g.metadata:
        if default is None:
            raise ConfigError(f"{g.path}: missing metadata key {key!r}")
        return default
    if g.value_types[key] not in {(t,) for t in INTEGER_TYPES}:
        raise ConfigError(f"{g.path}: metadata {key!r} must be an integer, has type {_describe(g.value_types[key])}")
    return int(g.metadata[key])


def _meta_float(g: GGUFFile, key: str, default: float) -> float:
    if key not in g.metadata:
        return default
    if g.value_types[key] not in {(t,) for t in FLOAT_TYPES | INTEGER_TYPES}:
        raise ConfigError(f"{g.path}: metadata {key!r} must be a number, has type {_describe(g.value_types[key])}")
    return float(g.metadata[key])


def _head_dim(g: GGUFFile, n_embd: int, n_head: int) -> int:
    rope_dims = _meta_int(g, "llama.rope.dimension_count", 0)
    key_len = _meta_int(g, "llama.attention.key_length", 0)
    value_len = _meta_int(g, "llama.attention.value_length", 0)
    head_dim = key_len or rope_dims or (n_embd // n_head if n_head > 0 else 0)
    if rope_dims and rope_dims != head_dim:
        raise ConfigError(
            f"{g.path}: llama.rope.dimension_count = {rope_dims} != head dim {head_dim} (partial RoPE is not supported)"
        )
    if value_len and value_len != head_dim:
        raise ConfigError(f"{g.path}: llama.attention.value_length = {value_len} != key length {head_dim}")
    return head_dim


def _check_rope_scaling(g: GGUFFile) -> None:
    """Only plain RoPE is expressed in metadata (llama3 scaling lives in rope_freqs.weight)."""
    kind = g.metadata.get("llama.rope.scaling.type", "none")
    factor = _meta_float(g, "llama.rope.scaling.factor", 1.0)
    if isinstance(kind, str) and (kind == "none" or (kind == "linear" and factor in (0.0, 1.0))):
        return
    raise ConfigError(f"{g.path}: llama.rope.scaling.type = {kind!r} (factor {factor}) is not supported")


def _rope_freq_divisors(g: GGUFFile) -> tuple[float, ...] | None:
    info = g.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    if info.type_name not in ("F32", "F16", "BF16") or len(info.dims) != 1:
        raise UnsupportedDTypeError(
            f"{g.path}: rope_freqs.weight must be a 1-D float tensor, got {info.type_name} {list(info.dims)}"
        )
    values = dequantize(g.tensor_bytes("rope_freqs.weight"), info.type_name, info.n_elements)
    return tuple(float(x) for x in values)


def _eos_ids(g: GGUFFile, tokens: list[str] | None, n_vocab: int) -> tuple[int, ...]:
    """eos/eot/eom ids from the metadata plus end-of-generation tokens found by their text.

    With none of them, Llama 3's defaults that fit the vocabulary (none for a small one).
    """
    ids: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if key in g.metadata:
            ids.append(_meta_int(g, key))
    if tokens is not None:
        types = g.metadata.get("tokenizer.ggml.token_type")
        wanted = set(END_OF_GENERATION_NAMES)  # recognised by their text, as llama.cpp does
        for i, text in enumerate(tokens):
            if text in wanted and (types is None or types[i] == TOKEN_TYPE_CONTROL):
                ids.append(i)
    if not ids:
        ids = [t for t in LlamaConfig.eos_token_ids if t < n_vocab]
    return tuple(dict.fromkeys(ids))


def gguf_config(g: GGUFFile) -> LlamaConfig:
    """LlamaConfig from the `llama.*` metadata and the tensor table (docs/MODEL.md, "Configuration")."""
    arch = g.metadata.get("general.architecture")
    if arch != "llama":
        raise ConfigError(f"{g.path}: general.architecture = {arch!r}, only 'llama' is supported")
    n_embd = _meta_int(g, "llama.embedding_length")
    n_head = _meta_int(g, "llama.attention.head_count")
    tokens = g.metadata.get("tokenizer.ggml.tokens")
    embd = g.tensors.get("token_embd.weight")
    n_vocab = _meta_int(g, "llama.vocab_size", 0) or (len(tokens) if tokens else 0) or (embd.shape[0] if embd else 0)
    if tokens is not None and len(tokens) > n_vocab:
        raise ConfigError(f"{g.path}: {len(tokens)} tokenizer tokens exceed the vocabulary of {n_vocab}")
    _check_rope_scaling(g)
    config = LlamaConfig(
        n_embd=n_embd,
        n_layer=_meta_int(g, "llama.block_count"),
        n_head=n_head,
        n_head_kv=_meta_int(g, "llama.attention.head_count_kv", n_head),
        head_dim=_head_dim(g, n_embd, n_head),
        n_ff=_meta_int(g, "llama.feed_forward_length"),
        n_vocab=n_vocab,
        n_ctx=_meta_int(g, "llama.context_length", LlamaConfig.n_ctx),
        rope_theta=_meta_float(g, "llama.rope.freq_base", 10000.0),
        rms_eps=_meta_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_scaling=None,
        rope_freq_divisors=_rope_freq_divisors(g),
        tie_word_embeddings="output.weight" not in g.tensors,
        bos_token_id=_meta_int(g, "tokenizer.ggml.bos_token_id", LlamaConfig.bos_token_id),
        eos_token_ids=_eos_ids(g, tokens, n_vocab),
    )
    for t in (config.bos_token_id, *config.eos_token_ids):
        if t >= config.n_vocab:
            raise ConfigError(f"{g.path}: special token id {t} is outside the vocabulary of {config.n_vocab}")
    return config


def _internal_names(g: GGUFFile, config: LlamaConfig) -> dict[str, str]:
    """GGUF tensor name -> internal name; rejects unknown tensors and reports missing ones."""
    expected = tensor_shapes(config)
    mapping: dict[str, str] = {}
    for name in g.tensors:
        if name == "rope_freqs.weight":
            continue
        stem = name[: -len(".weight")] if name.endswith(".weight") else None
        internal = _GLOBAL_TENSORS.get(stem, stem) if stem is not None else None
        if internal not in expected:
            raise UnexpectedTensorError(
                f"{g.path}: unexpected tensor {name!r} for a {config.n_layer}-layer llama model"
            )
        mapping[name] = internal
    missing = sorted(set(expected) - set(mapping.values()))
    if missing:
        raise MissingTensorError(
            f"{g.path}: missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return mapping


def hf_row_order(n_heads: int, head_dim: int) -> np.ndarray:
    """Row gather index turning GGUF interleaved q/k rows into HF half-split rows (docs/MODEL.md, "RoPE").

    W_hf[a*hd + s*(hd/2) + i] = W_gguf[a*hd + 2i + s], i.e. W_hf = W_gguf[index].
    """
    half = head_dim // 2
    a, s, i = np.meshgrid(np.arange(n_heads), np.arange(2), np.arange(half), indexing="ij")
    return (a * head_dim + 2 * i + s).reshape(-1)


def _convert(raw: np.ndarray, info: GGUFTensorInfo, rows: np.ndarray | None) -> Tensor:
    """Raw bytes of one tensor -> Tensor in PyTorch order, q/k rows gathered by `rows`."""
    shape = info.shape
    name = info.type_name
    if name not in _DEQUANTIZED and name not in _KEPT_QUANT and name not in ("F32", "F16", "BF16"):
        raise UnsupportedDTypeError(f"tensor {info.name!r} has GGUF type {name}, which cannot be imported")
    if len(shape) == 1:
        kind, data = "f32", dequantize(raw, name, info.n_elements).reshape(shape)
    else:  # the file's own format where the engine has it, else the nearest exact one (docs/FORMATS.md)
        kind, data = to_native(raw, name, shape[0], shape[1])
    if rows is not None:
        data = np.ascontiguousarray(data[rows])
    return Tensor(kind=kind, shape=shape, data=data)


def _check_conversion_memory(g: GGUFFile, mapping: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> None:
    """ResourceLimitError before converting when the tensors made in memory (dequantized to f32, or q/k rows
    gathered) would not fit; everything else stays a view of the mapped file."""
    made = 0
    for gguf_name, internal in mapping.items():
        info = g.tensors[gguf_name]
        if info.shape != shapes[internal]:
            continue  # gguf_tensors reports it
        if len(info.shape) == 1 or info.type_name in _DEQUANTIZED:
            made += 4 * info.n_elements
        elif internal.endswith((".attn_q", ".attn_k")):
            made += info.n_bytes
    check_memory(Budget(made, 0, 0), context=f" (none yet: {g.path}'s tensors converted for loading)")


def gguf_tensors(g: GGUFFile, config: LlamaConfig) -> dict[str, Tensor]:
    """Every llama tensor of `g` under its internal name, checked against `config`."""
    mapping = _internal_names(g, config)
    shapes = tensor_shapes(config)
    _check_conversion_memory(g, mapping, shapes)
    q_rows = hf_row_order(config.n_head, config.head_dim)
    k_rows = hf_row_order(config.n_head_kv, config.head_dim)
    out: dict[str, Tensor] = {}
    for gguf_name, internal in mapping.items():
        info = g.tensors[gguf_name]
        if info.shape != shapes[internal]:
            raise TensorShapeError(
                f"{g.path}: tensor {gguf_name!r} has shape {list(info.shape)}, expected {list(shapes[internal])}"
            )
        rows = q_rows if internal.endswith(".attn_q") else k_rows if internal.endswith(".attn_k") else None
        try:
            out[internal] = _convert(g.tensor_bytes(gguf_name), info, rows)
        except UnsupportedDTypeError as e:
            raise UnsupportedDTypeError(f"{g.path}: {e}") from None
    return out


def tokenizer_metadata(g: GGUFFile) -> dict[str, Any]:
    """The raw `tokenizer.ggml.*` values and `tokenizer.chat_template*` strings."""
    return {k: v for k, v in g.metadata.items() if k.startswith(("tokenizer.ggml.", "tokenizer.chat_template"))}


def load_gguf(path: str | os.PathLike) -> tuple[LlamaConfig, dict[str, Tensor], dict[str, Any]]:
    """Read a llama GGUF: (config, tensors by internal name, tokenizer metadata).

    Q4_0/Q8_0/F32/F16/BF16 matrices keep their format (zero-copy views of the mapping, except the
    row-permuted attn_q/attn_k); Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K and all 1-D tensors become f32.
    """
    with read_gguf(path) as g:
        config = gguf_config(g)
        return config, gguf_tensors(g, config), tokenizer_metadata(g)


__all__ = [
    "GGML_TYPES",
    "GGUFFile",
    "GGUFTensorInfo",
    "gguf_config",
    "gguf_tensors",
    "hf_row_order",
    "load_gguf",
    "read_gguf",
    "tokenizer_metadata",
]
