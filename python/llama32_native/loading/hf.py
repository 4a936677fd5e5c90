"""Load a Hugging Face Llama checkpoint directory (config.json + safetensors, single or sharded).

Contract: returns every weight the architecture needs under its internal name, shape-checked
against the config, as zero-copy views of the mapped files; pickle checkpoints (.bin/.pth)
are refused and never opened. Every failure is a ModelLoadError subclass naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..config import LlamaConfig
from ..errors import (
    MissingTensorError,
    ModelLoadError,
    ModelNotFoundError,
    NonFiniteWeightsError,
    TensorShapeError,
    UnexpectedTensorError,
    UnsupportedDTypeError,
)
from ..files import PICKLE_SUFFIXES, detect_format, os_error, read_json, regular_size, sniff
from ..schema import tensor_shapes
from . import Tensor
from .safetensors import SafetensorsFile

CONFIG_NAME = "config.json"
SINGLE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
MAX_INDEX_BYTES = 64 << 20  # a 3B index is ~25 kB

_KINDS = {"F32": "f32", "F16": "f16", "BF16": "bf16"}

# HF name (per layer, after "model.layers.{i}.") -> internal suffix (after "blk.{i}.")
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "attn_q",
    "self_attn.k_proj.weight": "attn_k",
    "self_attn.v_proj.weight": "attn_v",
    "self_attn.o_proj.weight": "attn_output",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up",
    "mlp.down_proj.weight": "ffn_down",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "tok_embd",
    "model.norm.weight": "output_norm",
    "lm_head.weight": "output",
}
_LAYER_RE = re.compile(r"model\.layers\.(0|[1-9][0-9]{0,8})\.(.+)")
_IGNORED_RE = re.compile(r"(.+\.)?rotary_emb\.inv_freq")


def internal_name(hf_name: str, n_layer: int) -> str | None:
    """Map a HF tensor name to ours; None for tensors to ignore. Raises UnexpectedTensorError."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if _IGNORED_RE.fullmatch(hf_name):
        return None
    m = _LAYER_RE.fullmatch(hf_name)
    if m and m.group(2) in _LAYER_NAMES:
        layer = int(m.group(1))
        if layer >= n_layer:
            raise UnexpectedTensorError(
                f"tensor {hf_name!r} belongs to layer {layer} but the config has {n_layer} layers"
            )
        return f"blk.{layer}.{_LAYER_NAMES[m.group(2)]}"
    raise UnexpectedTensorError(f"unexpected tensor {hf_name!r} (not part of the Llama architecture)")


# ----------------------------------------------------------------------------- locating files


def _refuse_pickle(path: str) -> None:
    raise ModelLoadError(
        f"{path}: pickle checkpoints (.bin/.pth) are refused because loading them can run "
        "arbitrary code; convert the model to safetensors (e.g. save_pretrained(..., "
        "safe_serialization=True)) and load that"
    )


def _pickle_files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [n for n in names if n.endswith(PICKLE_SUFFIXES) or n == "pytorch_model.bin.index.json"]


def _shard_path(directory: str, shard: Any, index_path: str) -> str:
    """Resolve a weight_map shard name; it must be a plain relative path inside the directory."""
    if not isinstance(shard, str) or not shard or "\x00" in shard or "\\" in shard:
        raise ModelLoadError(f"{index_path}: invalid shard file name {shard!r}")
    parts = shard.split("/")
    if os.path.isabs(shard) or any(p in ("", ".", "..") for p in parts):
        raise ModelLoadError(f"{index_path}: shard path {shard!r} leaves the model directory")
    if not shard.endswith(".safetensors"):
        if shard.endswith(PICKLE_SUFFIXES):
            _refuse_pickle(f"{index_path} (shard {shard!r})")
        raise ModelLoadError(f"{index_path}: shard {shard!r} is not a .safetensors file")
    # Lexical containment only: HF caches link shards to ../../blobs, which must keep working.
    return os.path.join(directory, *parts)


def _read_index(directory: str, index_path: str) -> dict[str, str]:
    """weight_map of a sharded checkpoint: tensor name -> shard path."""
    obj = read_json(index_path, MAX_INDEX_BYTES, "index")
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(wm, dict):
        raise ModelLoadError(f"{index_path}: expected an object with a 'weight_map' object")
    return {name: _shard_path(directory, shard, index_path) for name, shard in wm.items()}


def _locate(path: str) -> tuple[str, list[str], dict[str, str] | None]:
    """(model directory, safetensors files, weight_map or None) for a directory or a file path."""
    if os.path.isdir(path):
        directory = path
        single = os.path.join(directory, SINGLE_NAME)  # transformers' order: single file first
        if os.path.lexists(single):
            return directory, [single], None
        index = os.path.join(directory, INDEX_NAME)
        if os.path.lexists(index):
            weight_map = _read_index(directory, index)
            return directory, sorted(set(weight_map.values())), weight_map
        try:
            found = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
        except OSError as e:
            raise os_error(directory, e) from None
        if len(found) == 1:
            return directory, [os.path.join(directory, found[0])], None
        if len(found) > 1:
            raise ModelLoadError(
                f"{directory}: several .safetensors files {found} but no {INDEX_NAME} to say how they fit"
            )
        pickles = _pickle_files(directory)
        if pickles:
            _refuse_pickle(os.path.join(directory, pickles[0]) + f" (directory holds only {pickles})")
        raise ModelLoadError(f"{directory}: no {SINGLE_NAME}, {INDEX_NAME} or other .safetensors file")
    if path.endswith(PICKLE_SUFFIXES):
        _refuse_pickle(path)
    size = regular_size(path, "model file")
    directory = os.path.dirname(path) or "."
    if detect_format(sniff(path), size) == "json":
        weight_map = _read_index(directory, path)
        return directory, sorted(set(weight_map.values())), weight_map
    return directory, [path], None


def _load_config(directory: str) -> LlamaConfig:
    cfg_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.lexists(cfg_path):
        raise ModelLoadError(f"{directory}: no {CONFIG_NAME} (needed next to the safetensors weights)")
    return LlamaConfig.from_json_file(cfg_path)


# ----------------------------------------------------------------------------- collecting tensors


def _collect(files: list[SafetensorsFile], weight_map: dict[str, str] | None) -> dict[str, SafetensorsFile]:
    """HF tensor name -> the file holding it; a name in two files or missing from its shard fails."""
    owner: dict[str, SafetensorsFile] = {}
    for sf in files:
        for name in sf.entries:
            if name in owner:
                raise UnexpectedTensorError(f"tensor {name!r} is defined twice: in {owner[name].path} and in {sf.path}")
            owner[name] = sf
    if weight_map is not None:
        for name, shard in weight_map.items():
            sf = owner.get(name)
            if sf is None or os.path.normpath(sf.path) != os.path.normpath(shard):
                raise MissingTensorError(f"tensor {name!r} is listed in the index for {shard} but is not in it")
    return owner


def _to_tensor(sf: SafetensorsFile, hf_name: str, expected: tuple[int, ...]) -> Tensor:
    e = sf.entries[hf_name]
    if e.shape != expected:
        raise TensorShapeError(f"{sf.path}: tensor {hf_name!r}: expected shape {list(expected)}, got {list(e.shape)}")
    kind = _KINDS.get(e.dtype)
    if kind is None:
        raise UnsupportedDTypeError(
            f"{sf.path}: tensor {hf_name!r} has dtype {e.dtype}; weights must be F32, F16 or BF16"
        )
    return Tensor(kind, e.shape, sf.array(hf_name))


def _row_chunks(a: np.ndarray, max_elems: int = 1 << 22) -> Iterator[np.ndarray]:
    flat = a.reshape(-1)
    for start in range(0, flat.size, max_elems):
        yield flat[start : start + max_elems]


def check_finite(t: Tensor, where: str) -> None:
    """Raise NonFiniteWeightsError if the tensor holds NaN or Inf (bounded extra memory)."""
    for chunk in _row_chunks(t.data):
        if t.kind == "bf16":
            bad = bool(np.any((chunk & 0x7F80) == 0x7F80))  # exponent all ones
        else:
            bad = not bool(np.isfinite(chunk).all())
        if bad:
            raise NonFiniteWeightsError(f"{where} contains NaN or Inf")


def _hf_names(cfg: LlamaConfig) -> dict[str, str]:
    """Internal name -> HF name, for every tensor of the schema."""
    out = {v: k for k, v in _GLOBAL_NAMES.items()}
    for i in range(cfg.n_layer):
        out.update({f"blk.{i}.{v}": f"model.layers.{i}.{k}" for k, v in _LAYER_NAMES.items()})
    return out


def _build(cfg: LlamaConfig, owner: dict[str, SafetensorsFile], check_tensors: bool) -> dict[str, Tensor]:
    shapes = tensor_shapes(cfg)
    found: dict[str, tuple[str, SafetensorsFile]] = {}
    for hf_name, sf in owner.items():
        name = internal_name(hf_name, cfg.n_layer)
        if name is None:
            continue
        if name == "output" and cfg.tie_word_embeddings:
            # Tied: transformers ties lm_head to embed_tokens after loading, so a stored copy
            # is ignored; still require its shape and dtype to be sane.
            _to_tensor(sf, hf_name, (cfg.n_vocab, cfg.n_embd))
            continue
        found[name] = (hf_name, sf)
    missing = [n for n in shapes if n not in found]
    if missing:
        names = _hf_names(cfg)
        listed = ", ".join(names[n] for n in missing[:8]) + (", ..." if len(missing) > 8 else "")
        why = " (tie_word_embeddings is false)" if "output" in missing else ""
        raise MissingTensorError(f"{len(missing)} tensor(s) missing from the checkpoint{why}: {listed}")
    tensors: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        hf_name, sf = found[name]
        tensors[name] = _to_tensor(sf, hf_name, shape)
        if check_tensors:
            check_finite(tensors[name], f"{sf.path}: tensor {hf_name!r}")
    return tensors


def load_hf_dir(
    path: str | os.PathLike[str], *, check_tensors: bool = False
) -> tuple[LlamaConfig, dict[str, Tensor], list[SafetensorsFile]]:
    """Load a HF Llama checkpoint: a directory, its index.json, or one .safetensors file beside config.json.

    Returns (config, internal name -> Tensor, the open files). The tensors are views of the
    files' maps; close the files (SafetensorsFile.close) when done with the tensors.
    check_tensors: also scan every weight for NaN/Inf (NonFiniteWeightsError).
    """
    path = os.fspath(path)
    directory, shard_paths, weight_map = _locate(path)
    cfg = _load_config(directory)
    files: list[SafetensorsFile] = []
    try:
        for p in shard_paths:
            try:
                files.append(SafetensorsFile(p))
            except ModelNotFoundError:
                if weight_map is None:
                    raise
                raise MissingTensorError(f"{p}: shard file named in {INDEX_NAME} is missing") from None
        owner = _collect(files, weight_map)
        tensors = _build(cfg, owner, check_tensors)
    except BaseException:
        for sf in files:
            sf.close()
        raise
    return cfg, tensors, files


__all__ = ["check_finite", "internal_name", "load_hf_dir"]
