"""Crafted malformed GGUF files (docs/FORMATS.md, "GGUF"), built byte by byte from one valid baseline.

Contract: `VARIANTS` maps a variant name to a zero-argument function returning the file's bytes;
every variant must make `read_gguf` raise GGUFFormatError, and `baseline()` must parse. The cases
follow llama.cpp `tests/test-gguf.cpp` (handcrafted_file_type) plus the later advisories.
Run `python tests/mkbad_gguf.py OUTDIR` to write them all (e.g. as a fuzzing seed corpus).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys
from collections.abc import Callable

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1

# metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# ggml tensor types used here
T_F32, T_Q8_0 = 0, 8


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: str | bytes, length: int | None = None) -> bytes:
    """A gguf_string; `length` overrides the length prefix (to lie about it)."""
    b = s.encode("utf-8") if isinstance(s, str) else s
    return u64(len(b) if length is None else length) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def str_array(items: list[str]) -> bytes:
    return u32(STRING) + u64(len(items)) + b"".join(gstr(s) for s in items)


def i32_array(items: list[int]) -> bytes:
    return u32(I32) + u64(len(items)) + b"".join(struct.pack("<i", v) for v in items)


def tensor_info(name: str | bytes, dims: list[int], ggml_type: int, offset: int, n_dims: int | None = None) -> bytes:
    head = gstr(name) + u32(len(dims) if n_dims is None else n_dims)
    return head + b"".join(u64(d) for d in dims) + u32(ggml_type) + u64(offset)


@dataclasses.dataclass
class Spec:
    """Everything that goes into one file; variants edit a copy of the baseline."""

    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None  # None: len(tensors)
    n_kv: int | None = None  # None: len(kvs)
    kvs: list[bytes] = dataclasses.field(default_factory=list)
    tensors: list[bytes] = dataclasses.field(default_factory=list)
    alignment: int = 32
    data: bytes = b""
    cut: int = 0  # drop this many bytes from the end


def baseline_spec() -> Spec:
    """A valid file: a few typical keys and two tensors (F32 [8] at 0, Q8_0 [32, 2] at 32)."""
    tokens = ["<s>", "a", "b", "c"]
    kvs = [
        kv("general.architecture", STRING, gstr("llama")),
        kv("general.alignment", U32, u32(32)),
        kv("llama.block_count", U32, u32(1)),
        kv("tokenizer.ggml.model", STRING, gstr("gpt2")),
        kv("tokenizer.ggml.tokens", ARRAY, str_array(tokens)),
        kv("tokenizer.ggml.token_type", ARRAY, i32_array([3, 1, 1, 1])),
        kv("tokenizer.ggml.merges", ARRAY, str_array(["a b"])),
        kv("tokenizer.ggml.bos_token_id", U32, u32(0)),
    ]
    tensors = [tensor_info("a.weight", [8], T_F32, 0), tensor_info("b.weight", [32, 2], T_Q8_0, 32)]
    data = bytes(range(32)) + bytes(2 * 34)  # ends exactly at the last tensor's end
    return Spec(kvs=kvs, tensors=tensors, data=data)


def build(spec: Spec) -> bytes:
    header = struct.pack(
        "<4sIQQ",
        spec.magic,
        spec.version,
        len(spec.tensors) if spec.n_tensors is None else spec.n_tensors,
        len(spec.kvs) if spec.n_kv is None else spec.n_kv,
    )
    body = header + b"".join(spec.kvs) + b"".join(spec.tensors)
    body += bytes((spec.alignment - len(body) % spec.alignment) % spec.alignment)
    out = body + spec.data
    return out[: len(out) - spec.cut] if spec.cut else out


def baseline() -> bytes:
    return build(baseline_spec())


# ------------------------------------------------------------------------------------ variant helpers
def _with(**changes: object) -> Callable[[], bytes]:
    def make() -> bytes:
        return build(dataclasses.replace(baseline_spec(), **changes))

    return make


def _kv_replaced(index: int, new: bytes, **changes: object) -> Callable[[], bytes]:
    def make() -> bytes:
        spec = baseline_spec()
        spec.kvs[index] = new
        return build(dataclasses.replace(spec, **changes))

    return make


def _kv_added(new: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        spec = baseline_spec()
        spec.kvs.append(new)
        return build(spec)

    return make


def _tensor_replaced(index: int, new: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        spec = baseline_spec()
        spec.tensors[index] = new
        return build(spec)

    return make


def _alignment(value: bytes, vtype: int = U32) -> Callable[[], bytes]:
    return _kv_replaced(1, kv("general.alignment", vtype, value))


def _truncated_at(section: str) -> Callable[[], bytes]:
    """Cut the file in the middle of the metadata or of the tensor infos."""

    def make() -> bytes:
        spec = baseline_spec()
        full = build(spec)
        kv_end = 24 + sum(len(k) for k in spec.kvs)
        cut_at = kv_end - 10 if section == "kv" else kv_end + len(spec.tensors[0]) + len(spec.tensors[1]) - 3
        return full[:cut_at]

    return make


def _nested_arrays(depth: int) -> bytes:
    payload = u32(U8) + u64(1) + b"\x00"
    for _ in range(depth - 1):
        payload = u32(ARRAY) + u64(1) + payload
    return payload


VARIANTS: dict[str, Callable[[], bytes]] = {
    # file and header
    "empty_file": lambda: b"",
    "three_bytes": lambda: b"GGU",
    "header_cut": lambda: baseline()[:20],
    "bad_magic": _with(magic=b"GGML"),
    "bad_magic_lowercase": _with(magic=b"gguf"),
    "version_0": _with(version=0),
    "version_1": _with(version=1),
    "version_future_4": _with(version=4),
    "version_u32_max": _with(version=U32_MAX),
    "version_byteswapped_3": _with(version=3 << 24),
    "version_byteswapped_2": _with(version=2 << 24),
    "n_tensors_u64_max": _with(n_tensors=U64_MAX),
    "n_tensors_2_63": _with(n_tensors=1 << 63),
    "n_tensors_just_too_many": _with(n_tensors=3),
    "n_tensors_file_sized": _with(n_tensors=1 << 20),
    "n_kv_u64_max": _with(n_kv=U64_MAX),
    "n_kv_2_63": _with(n_kv=1 << 63),
    "n_kv_just_too_many": _with(n_kv=9),
    # metadata keys and values
    "key_len_u64_max": _kv_replaced(0, gstr("general.architecture", U64_MAX) + u32(STRING) + gstr("llama")),
    "key_len_past_eof": _kv_replaced(0, gstr("general.architecture", 1000) + u32(STRING) + gstr("llama")),
    "key_empty": _kv_added(kv("", U32, u32(1))),
    "key_invalid_utf8": _kv_added(kv(b"general.\xff\xfe", U32, u32(1))),
    "key_too_long": _kv_added(kv("k" * 70000, U32, u32(1))),
    "string_value_past_eof": _kv_replaced(0, gstr("general.architecture") + u32(STRING) + gstr("llama", 1 << 30)),
    "string_value_len_u64_max": _kv_replaced(0, gstr("general.architecture") + u32(STRING) + gstr("llama", U64_MAX)),
    "string_value_invalid_utf8": _kv_added(kv("general.name", STRING, gstr(b"\xc3\x28"))),
    "value_type_13": _kv_added(kv("general.x", 13, u32(1))),
    "value_type_u32_max": _kv_added(kv("general.x", U32_MAX, u32(1))),
    "bool_value_2": _kv_added(kv("tokenizer.ggml.add_bos_token", BOOL, b"\x02")),
    "array_elem_type_bad": _kv_added(kv("general.x", ARRAY, u32(99) + u64(1) + u32(0))),
    "array_count_u64_max": _kv_added(kv("general.x", ARRAY, u32(U32) + u64(U64_MAX))),
    "array_count_past_eof": _kv_added(kv("general.x", ARRAY, u32(U32) + u64(1 << 32))),
    "string_array_count_huge": _kv_added(kv("general.x", ARRAY, u32(STRING) + u64(1 << 40))),
    "nested_array_count_huge": _kv_added(kv("general.x", ARRAY, u32(ARRAY) + u64(1 << 40))),
    "arrays_nested_too_deep": _kv_added(kv("general.x", ARRAY, _nested_arrays(6))),
    "duplicate_key": _kv_added(kv("general.architecture", STRING, gstr("llama"))),
    "truncated_in_metadata": _truncated_at("kv"),
    # alignment
    "alignment_0": _alignment(u32(0)),
    "alignment_13": _alignment(u32(13)),
    "alignment_24": _alignment(u32(24)),
    "alignment_4": _alignment(u32(4)),
    "alignment_2_31": _alignment(u32(1 << 31)),
    "alignment_u64_max": _alignment(u64(U64_MAX), U64),
    "alignment_is_string": _alignment(gstr("32"), STRING),
    "alignment_is_f32": _alignment(struct.pack("<f", 32.0), F32),
    # well-known keys of the wrong type (tokenizer arrays: llama.cpp PR #26690)
    "architecture_is_u32": _kv_replaced(0, kv("general.architecture", U32, u32(1))),
    "tokens_is_int_array": _kv_replaced(4, kv("tokenizer.ggml.tokens", ARRAY, i32_array([1, 2, 3, 4]))),
    "tokens_is_string": _kv_replaced(4, kv("tokenizer.ggml.tokens", STRING, gstr("abcd"))),
    "tokens_is_nested_array": _kv_replaced(
        4, kv("tokenizer.ggml.tokens", ARRAY, u32(ARRAY) + u64(1) + str_array(["a"]))
    ),
    "token_type_is_string_array": _kv_replaced(
        5, kv("tokenizer.ggml.token_type", ARRAY, str_array(["1", "1", "1", "1"]))
    ),
    "token_type_length_mismatch": _kv_replaced(5, kv("tokenizer.ggml.token_type", ARRAY, i32_array([1, 1, 1]))),
    "merges_is_int_array": _kv_replaced(6, kv("tokenizer.ggml.merges", ARRAY, i32_array([1]))),
    "scores_is_string_array": _kv_added(kv("tokenizer.ggml.scores", ARRAY, str_array(["0", "0", "0", "0"]))),
    "bos_token_id_is_string": _kv_replaced(7, kv("tokenizer.ggml.bos_token_id", STRING, gstr("0"))),
    "bos_token_id_negative": _kv_replaced(7, kv("tokenizer.ggml.bos_token_id", I32, struct.pack("<i", -1))),
    "chat_template_is_int": _kv_added(kv("tokenizer.chat_template", U32, u32(0))),
    # tensor infos
    "tensor_name_too_long": _tensor_replaced(0, tensor_info("x" * 64, [8], T_F32, 0)),
    "tensor_name_len_u64_max": _tensor_replaced(0, gstr("a.weight", U64_MAX) + u32(1) + u64(8) + u32(T_F32) + u64(0)),
    "tensor_name_empty": _tensor_replaced(0, tensor_info("", [8], T_F32, 0)),
    "tensor_name_invalid_utf8": _tensor_replaced(0, tensor_info(b"a\xff", [8], T_F32, 0)),
    "n_dims_0": _tensor_replaced(0, tensor_info("a.weight", [], T_F32, 0)),
    "n_dims_5": _tensor_replaced(0, tensor_info("a.weight", [8, 1, 1, 1, 1], T_F32, 0)),
    "n_dims_u32_max": _tensor_replaced(0, tensor_info("a.weight", [8], T_F32, 0, n_dims=U32_MAX)),
    "dim_zero": _tensor_replaced(0, tensor_info("a.weight", [8, 0], T_F32, 0)),
    "dim_negative": _tensor_replaced(0, tensor_info("a.weight", [8, U64_MAX], T_F32, 0)),
    "dim_2_63": _tensor_replaced(0, tensor_info("a.weight", [1 << 63], T_F32, 0)),
    "dim_huge": _tensor_replaced(0, tensor_info("a.weight", [1 << 40], T_F32, 0)),
    "nelements_overflow": _tensor_replaced(0, tensor_info("a.weight", [1 << 32, 1 << 32, 1 << 32], T_F32, 0)),
    "nelements_overflow_i64": _tensor_replaced(0, tensor_info("a.weight", [1 << 62, 4], T_F32, 0)),
    "nbytes_wrap_u64": _tensor_replaced(0, tensor_info("a.weight", [1 << 62], T_F32, 0)),
    "ggml_type_removed_4": _tensor_replaced(0, tensor_info("a.weight", [8], 4, 0)),
    "ggml_type_removed_31": _tensor_replaced(0, tensor_info("a.weight", [8], 31, 0)),
    "ggml_type_1000": _tensor_replaced(0, tensor_info("a.weight", [8], 1000, 0)),
    "ggml_type_u32_max": _tensor_replaced(0, tensor_info("a.weight", [8], U32_MAX, 0)),
    "ne0_not_block_multiple": _tensor_replaced(1, tensor_info("b.weight", [33, 2], T_Q8_0, 32)),
    "offset_misaligned": _tensor_replaced(1, tensor_info("b.weight", [32, 2], T_Q8_0, 40)),
    "offset_past_eof": _tensor_replaced(1, tensor_info("b.weight", [32, 2], T_Q8_0, 1 << 20)),
    "offset_pad_wrap": _tensor_replaced(1, tensor_info("b.weight", [32, 2], T_Q8_0, U64_MAX - 31)),
    "tensors_overlap": _tensor_replaced(1, tensor_info("b.weight", [32, 2], T_Q8_0, 0)),
    "duplicate_tensor_name": _tensor_replaced(1, tensor_info("a.weight", [32, 2], T_Q8_0, 32)),
    "truncated_in_tensor_infos": _truncated_at("tensors"),
    # tensor data
    "truncated_data_1_byte": _with(cut=1),
    "data_section_missing": _with(data=b""),
}


def write_all(out_dir: str) -> list[str]:
    """Write baseline.gguf and every variant as <name>.gguf into `out_dir`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, make in {"baseline": baseline, **VARIANTS}.items():
        path = os.path.join(out_dir, f"{name}.gguf")
        with open(path, "wb") as f:
            f.write(make())
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    print(f"wrote {len(write_all(sys.argv[1]))} files to {sys.argv[1]}")
