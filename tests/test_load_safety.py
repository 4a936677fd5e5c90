"""What a model file can make the process do: bounded allocation, validated native metadata, OS errors as l32 errors.

Properties under test (docs/ERRORS.md):
- config, tensor shapes and the KV cache are checked against each other and against the memory available before
  the engine is built: crafted configs (huge heads, dims, layers, context) raise TensorShapeError or
  ResourceLimitError stating the sizes, and the process's peak RSS does not move;
- every edit of a saved file's metadata (config, kinds, quant, tokenizer, specials, ids, tokenizer tensors, chat
  format) raises a ModelLoadError subclass, never a JSON, type, key or bare value error;
- OS-level failures (missing path, link loop, EIO, FIFO, huge integers) are ModelLoadError subclasses, and formats
  are told apart by content.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from llama32_native import Model, memory, schema
from llama32_native.config import LlamaConfig
from llama32_native.errors import (
    ConfigError,
    Error,
    InvalidArgumentError,
    MissingTensorError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceLimitError,
    TensorShapeError,
)
from llama32_native.loading.safetensors import SafetensorsFile, write_safetensors
from llama32_native.loading.synthetic import random_tensors
from llama32_native.tokenizer import GPT2_PATTERN, Tokenizer

TINY = LlamaConfig(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=300, n_ctx=512,
                   bos_token_id=256, eos_token_ids=(257,))


def _tokenizer() -> Tokenizer:
    pieces: list[bytes | None] = [bytes([b]) for b in range(256)] + [None] * 4 + [b"he", b"ll"] + [None] * 38
    specials = {"<|im_start|>": 256, "<|im_end|>": 257, "<|endoftext|>": 258}
    return Tokenizer.from_vocab(pieces, specials, GPT2_PATTERN, None, 258, n_vocab=300, add_bos=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("native") / "tiny.safetensors"
    with Model.random(TINY, quant="q8_0", threads=1, context_length=64, tokenizer=_tokenizer()) as m:
        m.save(path)
    return path


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------- finding 4: bounded allocation


def _rewrite(src: Path, dst: Path, meta_edit: Callable[[dict[str, str]], None] | None = None,
             tensor_edit: Callable[[dict[str, np.ndarray], dict[str, str]], None] | None = None) -> Path:
    with SafetensorsFile(src) as sf:
        meta = dict(sf.metadata)
        tensors = {k: np.array(sf.array(k)) for k in sf.entries}
        dtypes = {k: e.dtype for k, e in sf.entries.items() if e.dtype in ("U8", "BF16")}
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors, dtypes)
    write_safetensors(dst, tensors, meta, dtypes={k: v for k, v in dtypes.items() if k in tensors})
    return dst


def _with_config(**fields: Any) -> Callable[[dict[str, str]], None]:
    def edit(meta: dict[str, str]) -> None:
        cfg = json.loads(meta["config"])
        cfg.update(fields)
        meta["config"] = json.dumps(cfg)
    return edit


HUGE_CONFIGS = [
    {"n_head": 1024, "n_head_kv": 1024, "head_dim": 1024},  # the 256 GiB KV cache of the report
    {"n_layer": 1024, "n_head": 1024, "n_head_kv": 1024, "head_dim": 1024},  # the "KV cache size overflows" one
    {"n_embd": 65536, "n_ff": 262144},
    {"n_vocab": 4194304},
    {"n_layer": 1024},
]


@pytest.mark.parametrize("fields", HUGE_CONFIGS, ids=[",".join(f) for f in HUGE_CONFIGS])
def test_crafted_native_configs_allocate_nothing(saved: Path, tmp_path: Path, fields: dict[str, int]) -> None:
    bad = _rewrite(saved, tmp_path / "bad.safetensors", _with_config(**fields))
    before = _peak_rss()
    for ctx in (8192, 1 << 20):
        with pytest.raises((TensorShapeError, MissingTensorError, ResourceLimitError, ConfigError)):
            Model.from_pretrained(bad, context_length=ctx, threads=1)
    assert _peak_rss() - before < 64 << 20


def _consistent(cfg: LlamaConfig) -> dict[str, Any]:
    """Real (small) tensors of a config whose weights are tiny but whose KV cache is not."""
    return dict(random_tensors(cfg, schema.tensor_plan(cfg, "f32"), seed=1))


@pytest.mark.parametrize("kw", [
    {"n_layer": 64, "n_head": 1, "n_head_kv": 1, "head_dim": 1024, "n_embd": 32, "n_ff": 32, "context_length": 1 << 20,
         "max_sequences": 64},
    {"n_layer": 8, "n_head": 4, "n_head_kv": 4, "head_dim": 1024, "n_embd": 32, "n_ff": 32, "context_length": 1 << 20,
         "max_sequences": 4096},
])
def test_kv_cache_beyond_memory_is_refused_before_the_engine(kw: dict[str, int]) -> None:
    ctx, seqs = kw.pop("context_length"), kw.pop("max_sequences")
    cfg = LlamaConfig(n_vocab=64, n_ctx=1 << 20, **kw)
    tensors = _consistent(cfg)
    before = _peak_rss()
    with pytest.raises(ResourceLimitError) as info:
        Model(cfg, tensors, quant="f32", threads=1, context_length=ctx, max_sequences=seqs)
    msg = str(info.value)
    assert "KV cache" in msg and "GiB" in msg and "available" in msg
    assert _peak_rss() - before < 64 << 20


def test_budget_counts_weights_and_cache() -> None:
    cfg = LlamaConfig.preset("llama-3.2-1b")
    b = memory.estimate(cfg, schema.tensor_plan(cfg, "q4_0"), 8192, 1, "f16")
    # 16 layers x 8 KV heads x 64 dims x 8192 positions x (K and V) x 2 bytes
    assert b.kv_cache == 16 * 8 * 64 * 8192 * 2 * 2
    assert 0.7e9 < b.weights < 1.0e9  # ~0.85 GB of q4_0 weights (embedding at q8_0)
    assert memory.kv_cache_bytes(cfg, 8192, 2, "q8_0") == 16 * 8 * 2 * 8192 * 2 * 2 * 34  # 34 bytes per 32


def test_memory_sources(tmp_path: Path) -> None:
    assert memory.meminfo_available("MemTotal: 10 kB\nMemAvailable:     2048 kB\n") == 2048 * 1024
    assert memory.meminfo_available("nothing") is None
    root = tmp_path / "cg"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "memory.max").write_text("1000000\n")
    (root / "a" / "memory.current").write_text("400000\n")
    (root / "a" / "b" / "memory.max").write_text("max\n")
    room, where = memory.cgroup_headroom("0::/a/b\n", str(root))
    assert room == 600000 and "memory.max" in where
    v1 = root / "memory" / "x"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("5000\n")
    (v1 / "memory.usage_in_bytes").write_text("1000\n")
    assert memory.cgroup_headroom("4:memory:/x\n", str(root))[0] == 4000
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory.cgroup_headroom("4:memory:/x\n", str(root)) is None
    have, _ = memory.available_memory()
    assert have is None or have > 0


def test_resource_limit_error_states_both_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: (1000, "MemAvailable in /proc/meminfo"))
    with pytest.raises(ResourceLimitError, match=r"needs about .* GiB .* has 0\.00 GiB available"):
        Model.random(TINY, quant="f32", threads=1, context_length=64)


def test_random_weights_are_checked_before_they_are_drawn() -> None:
    cfg = LlamaConfig(n_embd=65536, n_layer=1, n_head=64, n_head_kv=64, n_ff=262144, n_vocab=1 << 22)
    before = _peak_rss()
    with pytest.raises(ResourceLimitError, match="random weights"):
        random_tensors(cfg, schema.tensor_plan(cfg, "f32"))
    assert _peak_rss() - before < 64 << 20


@pytest.mark.parametrize("eps", [1e-50, 1e-13, 0.5, 1e300, 0.0, -1e-5, float("nan")])
def test_rms_eps_range(eps: float) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(TINY, rms_eps=eps)


def test_kv_q8_0_with_small_head_dim_is_an_argument_error() -> None:
    with pytest.raises(InvalidArgumentError, match="head_dim"):
        Model.random(TINY, quant="f32", threads=1, context_length=64, kv_cache="q8_0")


def test_native_tensor_shapes_are_checked_against_the_config(saved: Path, tmp_path: Path) -> None:
    def shrink(t: dict[str, np.ndarray], _: dict[str, str]) -> None:
        t["blk.0.ffn_down"] = t["blk.0.ffn_down"][:32]

    with pytest.raises(TensorShapeError):
        Model.from_pretrained(_rewrite(saved, tmp_path / "x.safetensors", tensor_edit=shrink), threads=1)


# ----------------------------------------------------------------------------- finding 6: native metadata


def _tok_desc(**fields: Any) -> Callable[[dict[str, str]], None]:
    def edit(meta: dict[str, str]) -> None:
        desc = json.loads(meta["tokenizer"])
        for k, v in fields.items():
            if v is _DROP:
                desc.pop(k, None)
            else:
                desc[k] = v
        meta["tokenizer"] = json.dumps(desc)
    return edit


_DROP = object()


def _set(key: str, value: Any) -> Callable[[dict[str, str]], None]:
    def edit(meta: dict[str, str]) -> None:
        if value is _DROP:
            meta.pop(key, None)
        else:
            meta[key] = value
    return edit


META_EDITS: dict[str, Callable[[dict[str, str]], None]] = {
    "config-not-json": _set("config", "{not json"),
    "config-list": _set("config", "[1, 2]"),
    "config-missing": _set("config", _DROP),
    "config-unknown-field": _with_config(bogus=1),
    "config-string-dim": _with_config(n_embd="64"),
    "config-huge-int": _set("config", '{"n_embd": ' + "9" * 5000 + "}"),
    "config-nan": _set("config", '{"rms_eps": NaN}'),
    "config-rope-list": _with_config(rope_scaling=[1, 2]),
    "config-divisors-str": _with_config(rope_freq_divisors=["x"]),
    "config-divisors-huge": _with_config(rope_freq_divisors=[1e400]),
    "config-eos-int": _with_config(eos_token_ids=5),
    "config-deep": _set("config", "[" * 100 + "]" * 100),
    "config-dup-key": _set("config", '{"n_embd": 64, "n_embd": 64}'),
    "kinds-missing": _set("kinds", _DROP),
    "kinds-list": _set("kinds", "[]"),
    "kinds-bad": _set("kinds", '{"tok_embd": "q5_k"}'),
    "kinds-wrong": lambda m: m.__setitem__("kinds", m["kinds"].replace('"q8_0"', '"q4_0"')),
    "quant-bad": _set("quant", "q3"),
    "quant-empty": _set("quant", ""),
    "tokenizer-not-json": _set("tokenizer", "nope"),
    "tokenizer-list": _set("tokenizer", "[]"),
    "tokenizer-no-pattern": _tok_desc(pattern=_DROP),
    "tokenizer-pattern-int": _tok_desc(pattern=5),
    "tokenizer-pattern-empty": _tok_desc(pattern=""),
    "tokenizer-pattern-bomb": _tok_desc(pattern=r"(\w+\s?)+$"),
    "tokenizer-pattern-syntax": _tok_desc(pattern="(?<"),
    "tokenizer-specials-list": _tok_desc(specials=[1]),
    "tokenizer-specials-str-id": _tok_desc(specials={"<|x|>": "256"}),
    "tokenizer-specials-dup": _tok_desc(specials={"<|a|>": 256, "<|b|>": 256}),
    "tokenizer-specials-range": _tok_desc(specials={"<|a|>": 10**9}),
    "tokenizer-bos-str": _tok_desc(bos_id="1"),
    "tokenizer-bos-range": _tok_desc(bos_id=10**12),
    "tokenizer-eos-neg": _tok_desc(eos_id=-1),
    "tokenizer-stop-str": _tok_desc(stop_ids="257"),
    "tokenizer-stop-range": _tok_desc(stop_ids=[300]),
    "tokenizer-stop-float": _tok_desc(stop_ids=[2.5]),
    "tokenizer-add-bos-int": _tok_desc(add_bos=1),
    "tokenizer-n-vocab-big": _tok_desc(n_vocab=10**6),
    "tokenizer-n-vocab-zero": _tok_desc(n_vocab=0),
    "tokenizer-n-vocab-small": _tok_desc(n_vocab=10),
    "chat-format-unknown": _set("chat_format", "Jinja"),
    "chat-format-llama3-without-headers": _set("chat_format", "Llama3ChatFormat"),
}


def _tensor_edit(name: str, fn: Callable[[np.ndarray], np.ndarray], dtype: str | None = None):
    def edit(t: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
        t[name] = fn(t[name])
        dtypes.pop(name, None)
        if dtype:
            dtypes[name] = dtype
    return edit


TENSOR_EDITS = {
    "offsets-dropped": lambda t, d: t.pop("__tokenizer.offsets"),
    "bytes-dropped": lambda t, d: t.pop("__tokenizer.bytes"),
    "offsets-short": _tensor_edit("__tokenizer.offsets", lambda a: a[:-5]),
    "offsets-backwards": _tensor_edit("__tokenizer.offsets", lambda a: a[::-1].copy()),
    "offsets-past-end": _tensor_edit("__tokenizer.offsets", lambda a: a + 1000),
    "offsets-float": _tensor_edit("__tokenizer.offsets", lambda a: a.astype(np.float64)),
    "bytes-2d": _tensor_edit("__tokenizer.bytes", lambda a: np.zeros((2, 2), np.uint8), "U8"),
    "bytes-truncated": _tensor_edit("__tokenizer.bytes", lambda a: a[:100], "U8"),
    "duplicate-piece": _tensor_edit("__tokenizer.bytes", lambda a: np.where(a == ord("b"), ord("a"), a).astype(
        np.uint8), "U8"),
    "weight-dtype": _tensor_edit("blk.0.attn_norm", lambda a: a.astype(np.float64)),
    "weight-kind-as-u8": _tensor_edit("blk.0.attn_q", lambda a: a.view(np.int8), None),
    "extra-tensor": lambda t, d: t.__setitem__("blk.9.attn_q", np.zeros(4, np.float32)),
    "missing-weight": lambda t, d: t.pop("blk.1.ffn_up"),
}


@pytest.mark.parametrize("name", list(META_EDITS))
def test_native_metadata_edits_raise_load_errors(saved: Path, tmp_path: Path, name: str) -> None:
    bad = _rewrite(saved, tmp_path / "bad.safetensors", META_EDITS[name])
    _expect_load_error(bad)


@pytest.mark.parametrize("name", list(TENSOR_EDITS))
def test_native_tensor_edits_raise_load_errors(saved: Path, tmp_path: Path, name: str) -> None:
    bad = _rewrite(saved, tmp_path / "bad.safetensors", tensor_edit=TENSOR_EDITS[name])
    if name == "duplicate-piece":  # two ids with one byte string: the lower id encodes, both decode
        with Model.from_pretrained(bad, threads=1) as m:
            assert m.tokenizer.decode(m.tokenizer.encode("aa", bos=False)) == "aa"
        return
    _expect_load_error(bad)


def test_random_metadata_mutations(saved: Path, tmp_path: Path) -> None:
    """Byte flips, truncations and insertions in every metadata value: a Model or a ModelLoadError, nothing else."""
    rng = np.random.default_rng(19)
    with SafetensorsFile(saved) as sf:
        keys = sorted(sf.metadata)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(120):
        key = keys[i % len(keys)]

        def mutate(meta: dict[str, str], key: str = key) -> None:
            v = meta[key]
            pos = int(rng.integers(0, max(1, len(v))))
            op = int(rng.integers(0, 3))
            if op == 0:
                meta[key] = v[:pos] + chr(int(rng.integers(32, 127))) + v[pos + 1:]
            elif op == 1:
                meta[key] = v[:pos]
            else:
                meta[key] = v[:pos] + str(rng.choice(['"', "{", "]", "-1", "1e999", "null", ",", "9" * 40])) + v[pos:]

        path = _rewrite(saved, tmp_path / f"m{i}.safetensors", mutate)
        try:
            Model.from_pretrained(path, threads=1, context_length=32).close()
            outcomes["loaded"] += 1
        except ModelLoadError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 30, outcomes


def _expect_load_error(path: Path) -> None:
    try:
        Model.from_pretrained(path, threads=1, context_length=32).close()
    except ModelLoadError:
        return
    pytest.fail("a damaged native file loaded")


def test_saved_file_round_trips(saved: Path) -> None:
    with Model.from_pretrained(saved, threads=1) as m:
        assert m.tokenizer.decode(m.tokenizer.encode("hello", bos=False)) == "hello"
        assert m.tokenizer.eos_id == 258 and m.quant == "q8_0"


# ----------------------------------------------------------------------------- finding 8: paths and OS errors


def _hf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 300}))
    write_safetensors(d / "model.safetensors", {"model.norm.weight": np.ones(64, np.float32)})
    return d


def test_config_integer_past_the_digit_limit(tmp_path: Path) -> None:
    d = _hf_dir(tmp_path)
    (d / "config.json").write_text('{"hidden_size": ' + "1" * 5000 + "}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Model.from_pretrained(d)


def test_looping_shard_symlink(tmp_path: Path) -> None:
    d = _hf_dir(tmp_path)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s.safetensors"}}))
    (d / "s.safetensors").symlink_to("s.safetensors")
    with pytest.raises(ModelLoadError, match="symbolic links"):
        Model.from_pretrained(d)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_proc_self_mem(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        Model.from_pretrained("/proc/self/mem")


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        Model.from_pretrained(fifo)


@pytest.mark.parametrize("name,content,expect", [
    ("x.gguf", b"this is a text file\n", "not a GGUF file (it looks like text)"),
    ("x.safetensors", b"PK\x03\x04" + bytes(60), "not a safetensors file (it looks like a ZIP archive"),
    ("x.bin2", b"\x80\x04\x95" + bytes(40), "not a model file (it looks like a Python pickle"),
    ("x.gguf", bytes(range(200, 256)) * 2, "not a GGUF file (it looks like binary data"),
    ("x.gguf", b"", "it looks like an empty file"),
])
def test_formats_are_detected_by_content(tmp_path: Path, name: str, content: bytes, expect: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        Model.from_pretrained(p)
    assert expect in str(info.value)


def test_a_gguf_named_safetensors_loads_as_gguf(tmp_path: Path) -> None:
    src = os.environ.get("LLAMA32_SMOLLM2_GGUF")
    if not src or not os.path.exists(src):
        pytest.skip("needs LLAMA32_SMOLLM2_GGUF")
    p = tmp_path / "model.safetensors"
    p.symlink_to(src)
    with Model.from_pretrained(p, threads=1, context_length=32) as m:
        assert m.config.n_layer == 30


def test_safetensors_named_gguf_loads(saved: Path, tmp_path: Path) -> None:
    p = tmp_path / "weights.gguf"
    p.write_bytes(saved.read_bytes())
    with Model.from_pretrained(p, threads=1, context_length=32) as m:
        assert m.quant == "q8_0"


def test_missing_path_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        Model.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError):
        Model.from_pretrained(str(tmp_path / "a\x00b"))


def test_safetensors_header_length_past_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelLoadError) as info:
        Model.from_pretrained(p)
    assert isinstance(info.value, Error) and "binary data" in str(info.value)


def test_gguf_conversion_is_budgeted_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Q4_1 file is dequantized to f32 while loading: those bytes are checked before any is made."""
    src = os.environ.get("LLAMA32_SMOLLM2_GGUF")
    if not src or not os.path.exists(src):
        pytest.skip("needs LLAMA32_SMOLLM2_GGUF")
    monkeypatch.setattr(memory, "available_memory", lambda: (100 << 20, "MemAvailable in /proc/meminfo"))
    before = _peak_rss()
    with pytest.raises(ResourceLimitError, match="converted for loading"):
        Model.from_pretrained(src, threads=1, context_length=32)
    assert _peak_rss() - before < 64 << 20
