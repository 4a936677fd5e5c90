"""Checkpoint loaders (safetensors, Hugging Face directories, GGUF, saved models) and their common Tensor type."""

from __future__ import annotations

import dataclasses

import numpy as np

# Bytes per block of 32 weights for the block-quantized kinds (ggml layout: f16 scale + payload).
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
KINDS = ("f32", "f16", "bf16", "q8_0", "q4_0")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One weight as a loader hands it over; `data` may be a read-only view of an mmap.

    kind: "f32" | "f16" | "bf16" | "q8_0" | "q4_0".
    shape: logical shape, PyTorch order ([out, in] for matrices).
    data: raw contiguous data: f32 -> float32 of `shape`; f16 -> float16 of `shape`;
        bf16 -> uint16 of `shape` (the raw bf16 bits); q8_0/q4_0 -> uint8 of
        [out, in // 32 * BLOCK_BYTES[kind]].
    """

    kind: str
    shape: tuple[int, ...]
    data: np.ndarray


__all__ = ["BLOCK_BYTES", "KINDS", "Tensor"]
