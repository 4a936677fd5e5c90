"""The tensor schema: every weight of the Llama architecture declared once (docs/MODEL.md).

Contract: `tensor_specs(config)` lists each tensor the engine needs with its internal name, its shape from the
config (PyTorch order, [out, in] for matrices) and whether it is a matrix or a norm vector; `tensor_plan` gives the
default in-memory type of every matrix for a quant mode. The loaders, the synthetic weights, save(), the memory
budget and the engine (Engine.tensor_specs, checked by a test) all follow this module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .config import LlamaConfig

MATRIX: Literal["matrix"] = "matrix"
VECTOR: Literal["vector"] = "vector"
# Per-layer tensors, after "blk.{i}."
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LAYER_VECTORS = ("attn_norm", "ffn_norm")

# Kinds a loader hands over (loading.Tensor.kind) and the block-quantized ones among them.
KINDS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl")
QK = 32  # weights per quantization block
# Bytes per block of QK weights (ggml layout: f16 scale + payload).
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "iq4_nl": 18}
# Bytes per element of the unquantized kinds.
ELEMENT_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
PANEL_ROWS = 16  # the engine keeps quantized matrices in panels of 16 rows (docs/FORMATS.md)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor of the architecture."""

    name: str
    shape: tuple[int, ...]
    role: Literal["matrix", "vector"]


def tensor_specs(config: LlamaConfig) -> list[TensorSpec]:
    """Every tensor of `config`: the matrices (embedding, untied output, layers), then the norm vectors."""
    c = config
    d = c.n_embd
    layer_shapes = {
        "attn_q": (c.q_dim, d),
        "attn_k": (c.kv_dim, d),
        "attn_v": (c.kv_dim, d),
        "attn_output": (d, c.q_dim),
        "ffn_gate": (c.n_ff, d),
        "ffn_up": (c.n_ff, d),
        "ffn_down": (d, c.n_ff),
    }
    specs = [TensorSpec("tok_embd", (c.n_vocab, d), MATRIX)]
    if not c.tie_word_embeddings:
        specs.append(TensorSpec("output", (c.n_vocab, d), MATRIX))
    for i in range(c.n_layer):
        specs += [TensorSpec(f"blk.{i}.{t}", layer_shapes[t], MATRIX) for t in LAYER_MATRICES]
    specs.append(TensorSpec("output_norm", (d,), VECTOR))
    for i in range(c.n_layer):
        specs += [TensorSpec(f"blk.{i}.{t}", (d,), VECTOR) for t in LAYER_VECTORS]
    return specs


def tensor_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Internal name -> shape for every tensor (output only when untied)."""
    return {s.name: s.shape for s in tensor_specs(config)}


def matrix_names(config: LlamaConfig) -> list[str]:
    return [s.name for s in tensor_specs(config) if s.role == MATRIX]


def vector_names(config: LlamaConfig) -> list[str]:
    return [s.name for s in tensor_specs(config) if s.role == VECTOR]


def tensor_plan(config: LlamaConfig, quant: str) -> dict[str, str]:
    """The in-memory type of every matrix for a quant mode ("f32", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl").

    The 4-bit modes keep the embedding table and output layer at 8 bits (q8_0), as Meta's quantized Llama 3.2
    does: they are the largest matrices and the most sensitive to 4-bit error.
    """
    big = "q8_0" if quant in ("q4_0", "q4_1", "iq4_nl") else quant
    return {name: big if name in ("tok_embd", "output") else quant for name in matrix_names(config)}


def data_nbytes(kind: str, shape: tuple[int, ...]) -> int:
    """Bytes of a loader Tensor's data of this kind and logical shape (quantized: whole blocks per row)."""
    if kind in BLOCK_BYTES:
        rows, cols = shape
        return rows * (cols // QK) * BLOCK_BYTES[kind]
    return math.prod(shape) * ELEMENT_BYTES[kind]


def engine_nbytes(kind: str, shape: tuple[int, ...]) -> int:
    """Bytes the engine holds for one tensor stored as `kind` (quantized rows padded to whole panels)."""
    if kind in BLOCK_BYTES and len(shape) == 2:
        rows, cols = shape
        return -(-rows // PANEL_ROWS) * PANEL_ROWS * (cols // QK) * BLOCK_BYTES[kind]
    return math.prod(shape) * ELEMENT_BYTES.get(kind, 4)


def n_params(config: LlamaConfig) -> int:
    """Number of weights (a tied output layer counted once)."""
    return sum(math.prod(s.shape) for s in tensor_specs(config))


__all__ = [
    "BLOCK_BYTES",
    "ELEMENT_BYTES",
    "KINDS",
    "LAYER_MATRICES",
    "LAYER_VECTORS",
    "MATRIX",
    "QK",
    "VECTOR",
    "TensorSpec",
    "data_nbytes",
    "engine_nbytes",
    "matrix_names",
    "n_params",
    "tensor_plan",
    "tensor_shapes",
    "tensor_specs",
    "vector_names",
]
