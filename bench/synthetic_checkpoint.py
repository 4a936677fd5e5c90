"""Synthetic Llama 3.2 checkpoints (random weights, exact architecture) for benchmarks.

Contract: `ensure_hf_checkpoint(arch, seed)` returns a cached Hugging Face directory (config.json,
a minimal byte-level tokenizer, bf16 safetensors written streaming); `ensure_gguf(arch, seed,
qtype)` returns a cached llama-architecture GGUF made by llama.cpp's own `convert_hf_to_gguf.py`
(fetched at run time from llama-cpp-python's source distribution, never vendored here) and, for
quantized types, `llama_cpp.llama_model_quantize`. Same (arch, seed) -> same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

try:
    from llama32_native.config import LlamaConfig
    from llama32_native.tokenizer import _byte_level_alphabet
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    from llama32_native.config import LlamaConfig
    from llama32_native.tokenizer import _byte_level_alphabet

ARCHES = {"1b": "llama-3.2-1b", "3b": "llama-3.2-3b"}
CACHE_ROOT = Path(os.environ.get("LLAMA32_BENCH_CACHE", Path.home() / ".cache/llama32_native/bench"))
LLAMA_CPP_SDIST_VERSION = os.environ.get("LLAMA32_BENCH_LLAMA_CPP_VERSION", "")  # "" = installed one
WEIGHT_STD = 0.02
SHARD_BYTES = 5_000_000_000  # the real 3B checkpoint is split at ~5 GB too
CHUNK_ELEMS = 1 << 24  # 16 Mi values (64 MiB f32) generated at a time
DONE_MARK = ".complete"

# GGUF file types: converter --outtype, or llama_ftype for llama_model_quantize.
CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
QUANT_FTYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}
# Q4_0 with the tied embedding/output table forced to Q8_0 (llama.cpp would pick Q6_K): the
# same weight layout as this project's q4_0 mode (docs/MODEL.md, "Tensors"), for like-for-like timings.
QUANT_VARIANTS = {"Q4_0_E8": ("Q4_0", 8)}  # name -> (base type, ggml_type of token_embd)
GGUF_QTYPES = (*CONVERTER_TYPES, *QUANT_FTYPES, *QUANT_VARIANTS)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Which synthetic checkpoint: architecture key ("1b" | "3b") and RNG seed."""

    arch: str = "1b"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"arch must be one of {sorted(ARCHES)}, got {self.arch!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def config(self) -> LlamaConfig:
        return LlamaConfig.preset(ARCHES[self.arch])

    @property
    def key(self) -> str:
        return f"llama-3.2-{self.arch}-seed{self.seed}"


# ----------------------------------------------------------------------------- HF directory
def hf_config_dict(cfg: LlamaConfig) -> dict:
    """config.json of a base Llama 3.2 model with `cfg`'s shapes (docs/MODEL.md, "Configuration")."""
    s = cfg.rope_scaling
    rope_scaling = None
    if s is not None:
        rope_scaling = {
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.n_vocab,
        "max_position_embeddings": cfg.n_ctx,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "rms_norm_eps": cfg.rms_eps,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": WEIGHT_STD,
        "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_ids[0],
    }


def tensor_specs(cfg: LlamaConfig) -> list[tuple[str, tuple[int, ...]]]:
    """HF tensor names and [out, in] shapes in file order (docs/MODEL.md, "Tensors")."""
    d, q, kv, f = cfg.n_embd, cfg.q_dim, cfg.kv_dim, cfg.n_ff
    specs = [("model.embed_tokens.weight", (cfg.n_vocab, d))]
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (q, d)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, q)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (f, d)),
            (p + "mlp.up_proj.weight", (f, d)),
            (p + "mlp.down_proj.weight", (d, f)),
        ]
    specs.append(("model.norm.weight", (d,)))
    if not cfg.tie_word_embeddings:
        specs.append(("lm_head.weight", (cfg.n_vocab, d)))
    return specs


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u >>= np.uint32(16)
    return u.astype(np.uint16)


def _bf16_chunks(name: str, n: int, index: int, seed: int, std: float) -> Iterator[bytes]:
    """The bf16 bytes of tensor number `index`, CHUNK_ELEMS values at a time."""
    if name.endswith("norm.weight"):
        one = np.full(min(n, CHUNK_ELEMS), 0x3F80, dtype="<u2")  # bf16 1.0
        for start in range(0, n, CHUNK_ELEMS):
            yield one[: min(CHUNK_ELEMS, n - start)].tobytes()
        return
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
    for start in range(0, n, CHUNK_ELEMS):
        x = rng.standard_normal(min(CHUNK_ELEMS, n - start), dtype=np.float32)
        x *= np.float32(std)
        yield _f32_to_bf16_bits(x).astype("<u2", copy=False).tobytes()


def _plan_shards(specs: Sequence[tuple[str, tuple[int, ...]]], max_bytes: int) -> list[list[int]]:
    shards: list[list[int]] = [[]]
    size = 0
    for i, (_, shape) in enumerate(specs):
        nbytes = 2 * int(np.prod(shape))
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += nbytes
    return shards


def _write_safetensors(path: Path, specs, indices: list[int], seed: int, std: float) -> int:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i in indices:
        name, shape = specs[i]
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for i in indices:
            name, shape = specs[i]
            f.writelines(_bf16_chunks(name, int(np.prod(shape)), i, seed, std))
    return offset


# The 256 special tokens of the Llama 3.2 text models (HF names; docs/MODEL.md, "Tokenizer").
_NAMED_SPECIALS = {
    0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
    10: "<|python_tag|>",
}


def _special_tokens(first_id: int) -> list[tuple[int, str]]:
    out, reserved = [], 0
    for k in range(256):
        name = _NAMED_SPECIALS.get(k)
        if name is None:
            name = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
        out.append((first_id + k, name))
    return out


def write_tokenizer_files(out_dir: Path, cfg: LlamaConfig) -> None:
    """A minimal valid byte-level BPE tokenizer: 256 byte tokens, 3 merges, the 256 specials.

    Ids between the byte tokens and the specials are unused; weights are random, so the text
    side only has to load (llama.cpp and transformers both need a vocabulary to exist).
    """
    alphabet = _byte_level_alphabet()
    vocab = {t: i for i, t in enumerate(alphabet)}
    merges = [("Ġ", "t"), ("h", "e"), ("i", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    first_special = cfg.n_vocab - 256
    specials = _special_tokens(first_special)
    vocab.update({s: i for i, s in specials})  # else `tokenizers` renumbers the added tokens
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in specials
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    (out_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    names = dict(specials)
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names.get(cfg.bos_token_id),
        "eos_token": names.get(cfg.eos_token_ids[0]),
        "model_max_length": cfg.n_ctx,
        "clean_up_tokenization_spaces": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))


def write_hf_checkpoint(
    out_dir: str | os.PathLike,
    cfg: LlamaConfig,
    *,
    seed: int = 0,
    std: float = WEIGHT_STD,
    max_shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Write config.json, tokenizer files and bf16 safetensors (sharded like the Hub's).

    Weights ~ N(0, std^2), norms = 1; tensor i draws from PCG64(SeedSequence([seed, i])), so the
    bytes depend only on (cfg, seed, std). Memory use stays around 3 x CHUNK_ELEMS x 4 bytes.
    """
    if not (isinstance(std, float) and std > 0):
        raise ValueError(f"std must be a positive float, got {std!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))
    write_tokenizer_files(out, cfg)
    specs = tensor_specs(cfg)
    shards = _plan_shards(specs, max_shard_bytes)
    if len(shards) == 1:
        _write_safetensors(out / "model.safetensors", specs, shards[0], seed, std)
        return out
    weight_map, total = {}, 0
    for k, indices in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_safetensors(out / fname, specs, indices, seed, std)
        weight_map.update({specs[i][0]: fname for i in indices})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


def ensure_hf_checkpoint(arch: str = "1b", seed: int = 0, *, cache_root: Path | None = None) -> Path:
    """The cached HF directory for (arch, seed), written on first use."""
    spec = SyntheticSpec(arch, seed)
    out = (cache_root or CACHE_ROOT) / "hf" / spec.key
    if (out / DONE_MARK).exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    write_hf_checkpoint(tmp, spec.config, seed=seed)
    (tmp / DONE_MARK).write_text(json.dumps({"arch": arch, "seed": seed, "std": WEIGHT_STD}))
    tmp.rename(out)
    return out


# ----------------------------------------------------------------------------- llama.cpp converter
def _installed_llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception as e:  # noqa: BLE001 - any metadata failure means "not installed"
        raise RuntimeError(
            "llama-cpp-python is not installed; set LLAMA32_BENCH_LLAMA_CPP_VERSION to fetch a "
            f"converter anyway ({e})"
        ) from None


def find_converter(cache_root: Path | None = None) -> Path:
    """Path of llama.cpp's convert_hf_to_gguf.py, from llama-cpp-python's sdist (cached).

    The sdist is fetched once with `pip download --no-binary llama-cpp-python`; only the
    converter, its `conversion/` package and `gguf-py/` are extracted.
    """
    version = LLAMA_CPP_SDIST_VERSION or _installed_llama_cpp_version()
    src = (cache_root or CACHE_ROOT) / "src"
    root = src / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    script = root / "convert_hf_to_gguf.py"
    if script.exists() and (root / DONE_MARK).exists():
        return script
    src.mkdir(parents=True, exist_ok=True)
    sdist = src / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
               f"llama-cpp-python=={version}", "-d", str(src)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers()
                   if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
        tf.extractall(src, members=members, filter="data")
    if not script.exists():
        raise RuntimeError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
    (root / DONE_MARK).write_text(version)
    return script


# Runs the converter with two patches: (1) the synthetic tokenizer's pre-tokenizer hash is unknown
# to get_vocab_base_pre(), so declare it Llama 3's ("llama-bpe", what real 3.2 conversions carry);
# (2) skip the SentencePiece attempt (it imports `sentencepiece` before noticing there is no
# tokenizer.model), so the converter goes straight to its Llama 3 byte-level BPE path.
_CONVERTER_RUNNER = """
import sys, runpy
script = sys.argv[1]
sys.path.insert(0, str(__import__('pathlib').Path(script).parent))
import conversion.base as base
def _no_spm(self, *args, **kwargs):
    raise FileNotFoundError("no tokenizer.model (synthetic checkpoint)")
base.TextModel._set_vocab_sentencepiece = _no_spm
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "llama-bpe"
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def convert_hf_to_gguf(hf_dir: Path, out_path: Path, outtype: str) -> Path:
    """Run llama.cpp's converter (subprocess) to write an F32/F16/BF16 GGUF."""
    script = find_converter()
    tmp = out_path.with_name(out_path.name + ".partial")
    cmd = [sys.executable, "-c", _CONVERTER_RUNNER, str(script), str(hf_dir),
           "--outfile", str(tmp), "--outtype", outtype]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {hf_dir}:\n{proc.stderr[-4000:]}")
    tmp.rename(out_path)
    return out_path


def quantize_gguf(src: Path, out_path: Path, qtype: str, n_threads: int = 0) -> Path:
    """llama_model_quantize(src -> out_path) to Q8_0 / Q4_0 / Q4_K_M (or a variant)."""
    import llama_cpp

    base, embd_type = QUANT_VARIANTS.get(qtype, (qtype, None))
    if base not in QUANT_FTYPES:
        raise ValueError(f"qtype {qtype!r} is not a quantized type; known: {sorted(QUANT_FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[base]
    params.nthread = n_threads
    if embd_type is not None:
        params.token_embedding_type = embd_type
        params.output_tensor_type = embd_type
    tmp = out_path.with_name(out_path.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {qtype}) returned {rc}")
    tmp.rename(out_path)
    return out_path


def write_gguf(hf_dir_or_params: str | os.PathLike | SyntheticSpec, out_path: str | os.PathLike,
               qtype: str) -> Path:
    """Write a llama-architecture GGUF of `qtype` (F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q4_0_E8).

    `hf_dir_or_params` is an HF checkpoint directory or a SyntheticSpec (made/cached first).
    Quantized types go through a cached BF16 GGUF of the same checkpoint when given a spec,
    else through a BF16 GGUF written next to `out_path` and removed afterwards.
    """
    qtype = qtype.upper()
    if qtype not in GGUF_QTYPES:
        raise ValueError(f"qtype must be one of {list(GGUF_QTYPES)}, got {qtype!r}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(hf_dir_or_params, SyntheticSpec):
        spec = hf_dir_or_params
        if qtype in CONVERTER_TYPES:
            hf = ensure_hf_checkpoint(spec.arch, spec.seed)
            return convert_hf_to_gguf(hf, out, CONVERTER_TYPES[qtype])
        return quantize_gguf(ensure_gguf(spec.arch, spec.seed, "BF16"), out, qtype)
    hf = Path(hf_dir_or_params)
    if not (hf / "config.json").is_file():
        raise ValueError(f"{hf}: not a Hugging Face checkpoint directory (no config.json)")
    if qtype in CONVERTER_TYPES:
        return convert_hf_to_gguf(hf, out, CONVERTER_TYPES[qtype])
    bf16 = out.with_name(out.name + ".bf16.gguf")
    try:
        convert_hf_to_gguf(hf, bf16, "bf16")
        return quantize_gguf(bf16, out, qtype)
    finally:
        bf16.unlink(missing_ok=True)


def gguf_cache_path(arch: str, seed: int, qtype: str, cache_root: Path | None = None) -> Path:
    spec = SyntheticSpec(arch, seed)
    return (cache_root or CACHE_ROOT) / "gguf" / f"{spec.key}-{qtype.upper()}.gguf"


def ensure_gguf(arch: str = "1b", seed: int = 0, qtype: str = "Q4_0") -> Path:
    """The cached GGUF for (arch, seed, qtype), written on first use."""
    path = gguf_cache_path(arch, seed, qtype)
    if path.exists():
        return path
    return write_gguf(SyntheticSpec(arch, seed), path, qtype)


def gguf_tensor_types(path: str | os.PathLike) -> dict[str, int]:
    """Count of tensors per ggml type name in a GGUF (uses the `gguf` package)."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(os.fspath(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["1b"], choices=sorted(ARCHES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gguf", nargs="*", default=[], metavar="QTYPE",
                    help=f"also make GGUF files: {', '.join(GGUF_QTYPES)}")
    args = ap.parse_args(argv)
    for arch in args.arch:
        t0 = time.perf_counter()
        hf = ensure_hf_checkpoint(arch, args.seed)
        print(f"{arch} hf   {hf}  ({time.perf_counter() - t0:.1f} s)", flush=True)
        for q in args.gguf:
            t0 = time.perf_counter()
            p = ensure_gguf(arch, args.seed, q)
            size = p.stat().st_size / 1e9
            print(f"{arch} {q:7s} {p}  {size:.3f} GB  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
