"""Checkpoint loaders (safetensors, Hugging Face directories, GGUF, saved models) and their common Tensor type."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..schema import BLOCK_BYTES, KINDS

if TYPE_CHECKING:
    from ..config import LlamaConfig


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


class GeneratedTensors(dict[str, Tensor]):
    """Tensors that exist only to be loaded: a Model empties this dict as the engine takes each one, so random
    f32 weights are never held twice (the 3B in f32 is 12.9 GB: two copies would not fit in 24 GiB)."""


@dataclasses.dataclass
class Checkpoint:
    """What a loader hands the Model: config, tensors, tokenizer and chat format, and how to close the files."""

    config: LlamaConfig
    tensors: dict[str, Tensor]
    tokenizer: Any = None
    chat_format: Any = None
    plan: dict[str, str] | None = None  # in-memory types fixed by the file (saved models)
    quant: str | None = None
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    file_plan: dict[str, str] | None = None  # the formats a GGUF holds: the default plan, which quant= overrides

    def close(self) -> None:
        for c in self.closers:
            c()
        self.closers.clear()


__all__ = ["BLOCK_BYTES", "KINDS", "Checkpoint", "GeneratedTensors", "Tensor"]
