"""Our own safetensors reader (validating header parser + read-only mmap) and streaming writer.

Contract: every violation of the format (docs/FORMATS.md, "Safetensors"; docs/ERRORS.md, "Malformed files") raises
SafetensorsFormatError before any tensor byte is touched; nothing is ever allocated from a size
the file claims before that size is checked against the file's real length.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import MissingTensorError, ModelLoadError, SafetensorsFormatError, UnsupportedDTypeError
from ..files import json_depth, map_regular, parse_json

# ref: huggingface/safetensors safetensors/src/tensor.rs MAX_HEADER_SIZE
MAX_HEADER_SIZE = 100_000_000
# numpy arrays have at most 64 dimensions; no checkpoint needs more than a handful.
MAX_RANK = 16
_U64_MAX = (1 << 64) - 1
# A valid header nests 3 deep ({name: {"shape": [..]}}); deeper is refused before json.loads
# recurses, so a raised sys.setrecursionlimit can never turn a crafted header into a C stack overflow.
MAX_JSON_DEPTH = 8
_METADATA_KEY = "__metadata__"
_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


@dataclasses.dataclass(frozen=True)
class _DType:
    bits: int
    numpy: str | None  # little-endian numpy dtype string; None: no numpy equivalent


# Every dtype the reference implementation knows. Those without a numpy type parse fine
# but raise UnsupportedDTypeError when their data is asked for.
DTYPES: dict[str, _DType] = {
    "BOOL": _DType(8, "|b1"),
    "F4": _DType(4, None),
    "F6_E2M3": _DType(6, None),
    "F6_E3M2": _DType(6, None),
    "U8": _DType(8, "|u1"),
    "I8": _DType(8, "|i1"),
    "F8_E5M2": _DType(8, None),
    "F8_E4M3": _DType(8, None),
    "F8_E8M0": _DType(8, None),
    "I16": _DType(16, "<i2"),
    "U16": _DType(16, "<u2"),
    "F16": _DType(16, "<f2"),
    "BF16": _DType(16, "<u2"),  # raw bits; widen with `bits.astype(uint32) << 16`
    "I32": _DType(32, "<i4"),
    "U32": _DType(32, "<u4"),
    "F32": _DType(32, "<f4"),
    "C64": _DType(64, "<c8"),
    "F64": _DType(64, "<f8"),
    "I64": _DType(64, "<i8"),
    "U64": _DType(64, "<u8"),
}

# numpy dtype -> safetensors dtype used by the writer when no override is given.
_WRITE_DTYPES: dict[str, str] = {
    "b1": "BOOL",
    "u1": "U8",
    "i1": "I8",
    "i2": "I16",
    "u2": "U16",
    "f2": "F16",
    "i4": "I32",
    "u4": "U32",
    "f4": "F32",
    "c8": "C64",
    "f8": "F64",
    "i8": "I64",
    "u8": "U64",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor of the header. begin/end are relative to the byte buffer (file offset 8 + N)."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# ----------------------------------------------------------------------------- header parsing


def _is_u64(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _U64_MAX


def _check_text(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise SafetensorsFormatError(f"{what} {s!r} is not valid Unicode (lone surrogate)") from None


def _parse_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise SafetensorsFormatError(f"{_METADATA_KEY} must be an object, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise SafetensorsFormatError(f"{_METADATA_KEY}[{k!r}] must be a string, got {type(v).__name__}")
        _check_text(k, f"{_METADATA_KEY} key")
        _check_text(v, f"{_METADATA_KEY}[{k!r}] value")
    return dict(value)


def _parse_entry(name: str, info: Any) -> Entry:
    _check_text(name, "tensor name")
    where = f"tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsFormatError(f"{where}: entry must be an object, got {type(info).__name__}")
    if set(info) != _ENTRY_FIELDS:
        missing = sorted(_ENTRY_FIELDS - set(info))
        unknown = sorted(set(info) - _ENTRY_FIELDS)
        raise SafetensorsFormatError(f"{where}: fields missing {missing}, unknown {unknown}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorsFormatError(f"{where}: unknown dtype {dtype!r}")
    if isinstance(shape, list) and len(shape) > MAX_RANK:
        raise SafetensorsFormatError(f"{where}: rank {len(shape)} exceeds the maximum {MAX_RANK}")
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise SafetensorsFormatError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(o) for o in offsets):
        raise SafetensorsFormatError(f"{where}: data_offsets must be two non-negative integers, got {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise SafetensorsFormatError(f"{where}: data_offsets end {end} < begin {begin}")
    # Python ints do not overflow; the u64 bound is what a C reader (and the reference) can hold.
    bits = math.prod(shape) * DTYPES[dtype].bits
    if bits > _U64_MAX:
        raise SafetensorsFormatError(f"{where}: shape {shape} overflows 64-bit size arithmetic")
    if bits % 8:
        raise SafetensorsFormatError(f"{where}: {dtype} x {math.prod(shape)} is not a whole number of bytes")
    if bits // 8 != end - begin:
        raise SafetensorsFormatError(
            f"{where}: {dtype} {shape} needs {bits // 8} bytes but data_offsets span {end - begin}"
        )
    return Entry(dtype, tuple(shape), begin, end)


def _check_tiling(entries: Iterable[tuple[str, Entry]], buffer_len: int) -> list[tuple[str, Entry]]:
    ordered = sorted(entries, key=lambda kv: (kv[1].begin, kv[1].end))
    pos = 0
    for name, e in ordered:
        if e.begin != pos:
            kind = "hole before" if e.begin > pos else "overlap at"
            raise SafetensorsFormatError(
                f"tensor {name!r}: data_offsets begin {e.begin} != {pos} ({kind} it); "
                "tensors must tile the buffer contiguously from 0"
            )
        pos = e.end
    if pos != buffer_len:
        raise SafetensorsFormatError(
            f"tensor data ends at {pos} but the file's buffer holds {buffer_len} bytes "
            "(truncated file or trailing bytes)"
        )
    return ordered


def header_length(prefix: bytes, file_size: int) -> int:
    """Validated N from the first 8 bytes: 8 + N must fit in the file and N <= 100 MB."""
    if file_size < 8 or len(prefix) < 8:
        raise SafetensorsFormatError(f"file is {file_size} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_SIZE:
        raise SafetensorsFormatError(f"header length {n} exceeds the maximum {MAX_HEADER_SIZE}")
    if 8 + n > file_size:
        raise SafetensorsFormatError(f"invalid header length {n}: 8 + {n} is past the end of a {file_size}-byte file")
    if n == 0:
        raise SafetensorsFormatError("header length is 0 (the header must be a JSON object)")
    return n


def parse_header(buf: bytes, file_size: int) -> tuple[dict[str, Entry], dict[str, str]]:
    """Validate a safetensors header; a pure function of the bytes (for fuzzing).

    buf: the file's first bytes (at least 8 + N of them; the whole file is fine).
    file_size: the file's total length, checked against the header's offsets.
    Returns (entries ordered by data offset, __metadata__). Raises SafetensorsFormatError.
    """
    if isinstance(file_size, bool) or not isinstance(file_size, int) or file_size < 0:
        raise TypeError(f"file_size must be a non-negative int, got {file_size!r}")
    n = header_length(bytes(buf[:8]), file_size)
    raw = bytes(buf[8 : 8 + n])
    if len(raw) != n:
        raise SafetensorsFormatError(f"buffer holds {len(raw)} header bytes, header length says {n}")
    if raw[:1] != b"{":
        raise SafetensorsFormatError(f"header must start with '{{', got {raw[:1]!r}")
    obj = parse_json(raw, "header", SafetensorsFormatError, MAX_JSON_DEPTH)
    if not isinstance(obj, dict):  # unreachable after the '{' check; kept for clarity
        raise SafetensorsFormatError("header must be a JSON object")
    metadata: dict[str, str] = {}
    parsed: list[tuple[str, Entry]] = []
    for name, info in obj.items():
        if name == _METADATA_KEY:
            metadata = _parse_metadata(info)
        else:
            parsed.append((name, _parse_entry(name, info)))
    ordered = _check_tiling(parsed, file_size - 8 - n)
    return dict(ordered), metadata


# ----------------------------------------------------------------------------- reading


class SafetensorsFile:
    """A validated, read-only memory map of one .safetensors file.

    Lifetime: `array()` returns read-only numpy views into the map. A view keeps the mapping
    alive by itself (numpy holds the mmap's buffer), so it never dangles: `close()` unmaps at
    once when no view is left, else the mapping goes when the last view is garbage-collected.
    If the file is truncated in place by another process while mapped, touching the lost
    pages raises SIGBUS (an OS property of mmap); replacing it by rename is safe.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._mm: mmap.mmap | None = None
        self._mm = map_regular(self.path, "safetensors file", empty_cls=SafetensorsFormatError)
        try:
            self.file_size = len(self._mm)
            if self.file_size < 8:
                raise SafetensorsFormatError(f"file is {self.file_size} bytes, too short for safetensors")
            self.header_size = header_length(self._mm[:8], self.file_size)
            self.entries, self.metadata = parse_header(self._mm[: 8 + self.header_size], self.file_size)
        except SafetensorsFormatError as e:
            self.close()
            raise SafetensorsFormatError(f"{self.path}: {e}") from None
        except BaseException:
            self.close()
            raise
        self.data_offset = 8 + self.header_size

    # ------------------------------------------------------------------ access
    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def array(self, name: str) -> np.ndarray:
        """Zero-copy read-only view of one tensor (BF16 as uint16 bits)."""
        if self._mm is None:
            raise ModelLoadError(f"{self.path}: SafetensorsFile is closed")
        try:
            e = self.entries[name]
        except KeyError:
            raise MissingTensorError(f"{self.path}: no tensor {name!r}") from None
        np_dtype = DTYPES[e.dtype].numpy
        if np_dtype is None:
            raise UnsupportedDTypeError(f"{self.path}: tensor {name!r} has dtype {e.dtype}, which has no numpy type")
        dt = np.dtype(np_dtype)
        if e.numel == 0:
            out = np.empty(e.shape, dtype=dt)
            out.flags.writeable = False
            return out
        flat = np.frombuffer(self._mm, dtype=dt, count=e.numel, offset=self.data_offset + e.begin)
        return flat.reshape(e.shape)

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views still alive: the map is released with the last of them

    @property
    def closed(self) -> bool:
        return self._mm is None

    def __enter__(self) -> SafetensorsFile:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.entries)} tensors"
        return f"SafetensorsFile({self.path!r}, {state})"


# ----------------------------------------------------------------------------- writing


def _write_dtype(name: str, arr: np.ndarray, override: str | None) -> str:
    code = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    natural = _WRITE_DTYPES.get(code)
    if override is None:
        if natural is None:
            raise TypeError(f"tensor {name!r}: numpy dtype {arr.dtype} has no safetensors dtype")
        return natural
    info = DTYPES.get(override)
    if info is None:
        raise ValueError(f"tensor {name!r}: unknown safetensors dtype {override!r}")
    if info.bits != 8 * arr.dtype.itemsize:
        raise ValueError(
            f"tensor {name!r}: dtype {override} is {info.bits} bits but the array's items are "
            f"{8 * arr.dtype.itemsize} bits ({arr.dtype})"
        )
    return override


def _as_le_bytes(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.reshape(-1).view(np.uint8)


def _build_header(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None, dtypes: Mapping[str, str]
) -> tuple[bytes, list[str]]:
    header: dict[str, Any] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        header[_METADATA_KEY] = dict(metadata)
    infos: dict[str, tuple[str, np.ndarray]] = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == _METADATA_KEY:
            raise ValueError(f"invalid tensor name {name!r}")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"tensor {name!r}: expected a numpy array, got {type(arr).__name__}")
        infos[name] = (_write_dtype(name, arr, dtypes.get(name)), arr)
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtype overrides name unknown tensors {sorted(unknown)}")
    # ref: safetensors writer order: larger dtype first, then by name (keeps alignment).
    order = sorted(infos, key=lambda n: (-DTYPES[infos[n][0]].bits, n))
    pos = 0
    for name in order:
        dtype, arr = infos[name]
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_HEADER_SIZE:
        raise ValueError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_SIZE}")
    return raw, order


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    *,
    dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` as a safetensors file, streaming one tensor at a time.

    dtypes: per-tensor safetensors dtype overriding the natural one (same item size), e.g.
    {"w": "BF16"} for a uint16 array of bf16 bits. uint8 arrays are written as "U8".
    The header is space-padded to a multiple of 8 and tensors are ordered by descending dtype
    size then name, so the output is deterministic. The file appears atomically (temp + rename).
    """
    path = os.fspath(path)
    raw, order = _build_header(tensors, metadata, dict(dtypes or {}))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name in order:
                f.write(memoryview(_as_le_bytes(tensors[name])))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = [
    "DTYPES",
    "MAX_HEADER_SIZE",
    "MAX_JSON_DEPTH",
    "MAX_RANK",
    "Entry",
    "SafetensorsFile",
    "header_length",
    "json_depth",
    "parse_header",
    "write_safetensors",
]
