"""Safe access to the files a model is made of: the package's one way to open, read, map and parse them.

Contract: a path is opened only when it is a regular file (never a FIFO or device, which could block or never end),
its size is bounded before it is read, JSON is parsed with duplicate keys, NaN/Infinity, deep nesting and huge
integers refused, and every OSError (ENOENT, EACCES, ELOOP, EIO, ...) becomes the caller's ModelLoadError subclass
with a message naming the path and the reason (docs/ERRORS.md).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import re
import stat
import struct
from typing import Any

import numpy as np

from .errors import ModelLoadError, ModelNotFoundError

# A valid model JSON (config, index, safetensors header, tokenizer) nests at most a handful deep; deeper is refused
# before json.loads recurses, so a raised sys.setrecursionlimit can never turn a file into a C stack overflow.
MAX_JSON_DEPTH = 16
# Suffixes of pickle checkpoints: never opened, since unpickling can run code.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle")

_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.ELOOP: "too many levels of symbolic links (a link loop?)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error (not a readable file)",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a component of the path is not a directory",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error(path: str, exc: OSError, cls: type[ModelLoadError] = ModelLoadError) -> ModelLoadError:
    """The ModelLoadError subclass to raise for an OSError met while opening or reading `path`."""
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ModelNotFoundError(f"{path}: {reason}")
    return cls(f"{path}: cannot read: {reason}")


def regular_size(path: str, what: str = "file", cls: type[ModelLoadError] = ModelLoadError) -> int:
    """Size of `path`, which must be a regular file (symlinks followed); raises `cls` otherwise."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise os_error(path, e, cls) from None
    except ValueError as e:  # an embedded NUL
        raise cls(f"{path!r}: invalid path ({e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise cls(f"{what} {path}: not a regular file (mode {stat.filemode(st.st_mode)})")
    return st.st_size


def open_regular(path: str, what: str = "file", cls: type[ModelLoadError] = ModelLoadError) -> tuple[int, int]:
    """(fd, size) of a regular file opened read-only; never blocks on a FIFO, never reads a device."""
    regular_size(path, what, cls)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise os_error(path, e, cls) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
            raise cls(f"{what} {path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_regular(path: str, limit: int, what: str = "file", cls: type[ModelLoadError] = ModelLoadError,
                 big_cls: type[ModelLoadError] | None = None) -> bytes:
    """The whole content of a regular file of at most `limit` bytes (a larger one raises big_cls, default cls)."""
    fd, size = open_regular(path, what, cls)
    try:
        if size > limit:
            raise (big_cls or cls)(f"{what} {path}: {size} bytes, more than the {limit} allowed")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise os_error(path, e, cls) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # grew since the stat
        raise (big_cls or cls)(f"{what} {path}: more than the {limit} bytes allowed")
    return data


def map_regular(path: str, what: str = "file", cls: type[ModelLoadError] = ModelLoadError,
                empty_cls: type[ModelLoadError] | None = None) -> mmap.mmap:
    """A read-only memory map of a non-empty regular file (an empty one raises empty_cls, default cls)."""
    fd, size = open_regular(path, what, cls)
    if size == 0:
        os.close(fd)
        raise (empty_cls or cls)(f"{what} {path}: the file is empty")
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise os_error(path, e, cls) from None
    except ValueError as e:
        raise cls(f"{what} {path}: cannot map: {e}") from None
    finally:
        os.close(fd)


def sniff(path: str) -> bytes:
    """The first 64 bytes of a regular file (for format detection by content)."""
    fd, _ = open_regular(path)
    try:
        return os.read(fd, 64)
    except OSError as e:
        raise os_error(path, e) from None
    finally:
        os.close(fd)


def detect_format(head: bytes, size: int) -> str:
    """"gguf", "safetensors", "json" or "unknown" from a file's first bytes and its size."""
    if head.startswith(b"GGUF"):
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 8 + n <= size:
            return "safetensors"
    if head.lstrip()[:1] == b"{":
        return "json"
    return "unknown"


def describe_content(head: bytes) -> str:
    """What the first bytes of a file look like, for error messages ("text", "a ZIP archive", ...)."""
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (a PyTorch pickle checkpoint?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head.startswith(b"GGUF"):
        return "a GGUF file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "JSON text" if text.lstrip()[:1] in ("{", "[") else "text"
    return "binary data of an unknown format"


# ----------------------------------------------------------------------------- JSON


class _DuplicateKey(Exception):
    pass


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook that refuses a key given twice (JSON leaves the meaning open)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1


def _bracket_depth(text: bytes, chunk: int = 1 << 20) -> int:
    codes = np.frombuffer(text, dtype=np.uint8)
    depth = peak = 0
    for start in range(0, codes.size, chunk):
        running = np.cumsum(_BRACKET_STEP[codes[start : start + chunk]], dtype=np.int64) + depth
        peak = max(peak, int(running.max()))
        depth = int(running[-1])
    return peak


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Deepest [ / { nesting of a JSON text (brackets inside strings ignored); linear, no recursion.

    Exact whenever the result exceeds `limit`; otherwise it may be an upper bound <= limit.
    """
    upper = _bracket_depth(raw)  # counts brackets inside strings too: an upper bound
    if upper <= limit:
        return upper
    return _bracket_depth(_JSON_STRING.sub(b'""', raw))


def parse_json(raw: bytes | str, what: str, cls: type[ModelLoadError] = ModelLoadError,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the package's rules; every failure is `cls` naming `what`.

    Refused: invalid UTF-8, nesting deeper than max_depth, duplicate keys, NaN/Infinity, integers beyond
    Python's digit limit (a ValueError from int()), anything json itself rejects.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    depth = json_depth(data, max_depth)
    if depth > max_depth:
        raise cls(f"{what}: JSON nests {depth} deep (at most {max_depth} allowed)")
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as e:
        raise cls(f"{what}: duplicate key {e.args[0]!r}") from None
    except RecursionError:
        raise cls(f"{what}: JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, the int digit limit, NaN/Infinity
        raise cls(f"{what}: not valid JSON: {str(e)[:200]}") from None


def read_json(path: str, limit: int, what: str, cls: type[ModelLoadError] = ModelLoadError) -> Any:
    """A JSON file of at most `limit` bytes, read with read_regular and parsed with parse_json."""
    return parse_json(read_regular(path, limit, what, cls), f"{what} {path}", cls)


__all__ = [
    "MAX_JSON_DEPTH",
    "PICKLE_SUFFIXES",
    "describe_content",
    "detect_format",
    "json_depth",
    "map_regular",
    "no_duplicates",
    "open_regular",
    "os_error",
    "parse_json",
    "read_json",
    "read_regular",
    "regular_size",
    "sniff",
]
