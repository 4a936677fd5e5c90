"""The load-time budget: tensors checked against the config, and the engine's memory against the machine's.

Contract: `check_load` runs before the C++ engine is built and allocates nothing of the sizes it checks. Every
tensor must be present with the shape the schema gives and data of exactly the bytes its kind needs
(MissingTensorError/TensorShapeError); the weights, the whole KV cache (max_sequences x context_length positions)
and the activation buffers must fit in the memory this process may still use: /proc/meminfo MemAvailable and the
headroom of every cgroup (v2 memory.max, v1 memory.limit_in_bytes) above it. Otherwise ResourceLimitError states
the size asked for and what the machine has (docs/ERRORS.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import schema
from .config import LlamaConfig
from .errors import (
    InvalidArgumentError,
    MissingTensorError,
    ResourceLimitError,
    TensorShapeError,
    UnsupportedDTypeError,
)
from .loading import GeneratedTensors

KV_TILE = 16  # the engine rounds each sequence's positions up to tiles of 16
PREFILL_ROWS = 512  # rows of one prefill chunk (the activation buffers grow to this)
KV_ELEMENT_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}
_NUMPY_KINDS = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, **{k: np.uint8 for k in schema.BLOCK_BYTES}}
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2^63


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bytes the engine will hold for a model."""

    weights: int
    kv_cache: int
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.buffers


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def kv_cache_bytes(config: LlamaConfig, context_length: int, max_sequences: int, kv_cache: str) -> int:
    """Bytes of the KV cache: keys and values of every layer, sequence, KV head and position."""
    positions = -(-context_length // KV_TILE) * KV_TILE
    streams = config.n_layer * max_sequences * config.n_head_kv
    return int(2 * streams * positions * config.head_dim * KV_ELEMENT_BYTES[kv_cache])


def estimate(config: LlamaConfig, plan: Mapping[str, str], context_length: int, max_sequences: int,
             kv_cache: str) -> Budget:
    """What the engine allocates for `config` loaded with `plan` (matrices not named in it stay f32)."""
    c = config
    weights = sum(schema.engine_nbytes(plan.get(s.name, "f32") if s.role == schema.MATRIX else "f32", s.shape)
                  for s in schema.tensor_specs(c))
    n = min(context_length, PREFILL_ROWS)
    wide = max(c.n_embd, c.q_dim)
    per_row = c.n_embd + 2 * wide + c.q_dim + 2 * c.kv_dim + 2 * c.n_ff + c.head_dim + c.n_vocab
    return Budget(weights, kv_cache_bytes(c, context_length, max_sequences, kv_cache), 4 * n * per_row)


# ----------------------------------------------------------------------------- what the machine has


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(4096).strip()
    except OSError:
        return None


def meminfo_available(text: str | None = None) -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no such file)."""
    text = _read("/proc/meminfo") if text is None else text
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def cgroup_headroom(proc_cgroup: str | None = None, root: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """(bytes, where) of the smallest limit-minus-usage over this process's cgroup and its ancestors, or None.

    cgroup v2 ("0::/path"): memory.max and memory.current; v1 ("N:...memory...:/path"): memory.limit_in_bytes
    and memory.usage_in_bytes under root/memory. A path not visible in this mount namespace is skipped.
    """
    text = _read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup
    best: tuple[int, str] | None = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, rel = parts
        if hid == "0" and controllers == "":
            base, limit_name, usage_name = root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name = os.path.join(root, "memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        rel = rel.strip("/")
        while True:
            d = os.path.join(base, rel) if rel else base
            limit, usage = _read(os.path.join(d, limit_name)), _read(os.path.join(d, usage_name))
            if limit and limit.isdigit() and int(limit) < _UNLIMITED:
                room = max(0, int(limit) - (int(usage) if usage and usage.isdigit() else 0))
                if best is None or room < best[0]:
                    best = (room, f"cgroup {d}: {limit_name} {gib(int(limit))}")
            if not rel:
                break
            rel = os.path.dirname(rel)
    return best


def available_memory() -> tuple[int | None, str]:
    """(bytes this process may still allocate, a description of where the number comes from)."""
    found: list[tuple[int, str]] = []
    mem = meminfo_available()
    if mem is not None:
        found.append((mem, "MemAvailable in /proc/meminfo"))
    cg = cgroup_headroom()
    if cg is not None:
        found.append(cg)
    if not found:
        return None, "unknown"
    return min(found)


# ----------------------------------------------------------------------------- the check


def check_tensors(config: LlamaConfig, tensors: Mapping[str, Any], plan: Mapping[str, str]) -> None:
    """Every tensor of the schema is in `tensors` with its shape, a known kind and exactly the bytes it needs."""
    for spec in schema.tensor_specs(config):
        t = tensors.get(spec.name)
        if t is None:
            raise MissingTensorError(f"tensor {spec.name!r} is missing")
        if t.kind not in _NUMPY_KINDS:
            raise UnsupportedDTypeError(f"tensor {spec.name!r} has unknown kind {t.kind!r}")
        shape = tuple(t.shape)
        if shape != spec.shape:
            raise TensorShapeError(f"tensor {spec.name!r} has shape {list(shape)}, the config needs {list(spec.shape)}")
        if t.kind in schema.BLOCK_BYTES and (len(shape) != 2 or shape[1] % schema.QK):
            raise TensorShapeError(f"tensor {spec.name!r}: {t.kind} needs rows that are whole blocks of {schema.QK}")
        data = t.data
        want = schema.data_nbytes(t.kind, shape)
        if not isinstance(data, np.ndarray) or data.dtype != _NUMPY_KINDS[t.kind] or data.nbytes != want:
            got = f"{data.dtype} of {data.nbytes} bytes" if isinstance(data, np.ndarray) else type(data).__name__
            raise TensorShapeError(f"tensor {spec.name!r}: {t.kind} {list(shape)} needs {want} bytes, got {got}")
        target = plan.get(spec.name, "f32") if spec.role == schema.MATRIX else "f32"
        if target not in ("f32", "bf16", *schema.BLOCK_BYTES):
            raise TensorShapeError(f"tensor {spec.name!r}: unknown in-memory type {target!r}")


def check_memory(budget: Budget, releasable: int = 0, context: str = "") -> None:
    """ResourceLimitError when `budget` does not fit in what the machine has (plus bytes about to be freed)."""
    have, where = available_memory()
    if have is None or budget.total <= have + releasable:
        return
    freed = f" (+{gib(releasable)} freed while loading)" if releasable else ""
    raise ResourceLimitError(
        f"loading needs about {gib(budget.total)} (weights {gib(budget.weights)}, KV cache {gib(budget.kv_cache)}"
        f"{context}, buffers {gib(budget.buffers)}) but this process has {gib(have)} available{freed} "
        f"({where}); lower context_length or max_sequences, use kv_cache='q8_0' or a smaller quant"
    )


def check_load(config: LlamaConfig, tensors: Mapping[str, Any], plan: Mapping[str, str] | None, *, quant: str,
               context_length: int, max_sequences: int, kv_cache: str) -> None:
    """Everything Model checks before it builds the engine: tensors against the config, then memory."""
    if kv_cache == "q8_0" and config.head_dim % schema.QK:
        raise InvalidArgumentError(
            f"kv_cache q8_0 needs head_dim to be a multiple of {schema.QK} (this model's is {config.head_dim})"
        )
    plan = schema.tensor_plan(config, quant) if plan is None else plan
    check_tensors(config, tensors, plan)
    releasable = sum(int(t.data.nbytes) for t in tensors.values()) if isinstance(tensors, GeneratedTensors) else 0
    budget = estimate(config, plan, context_length, max_sequences, kv_cache)
    check_memory(budget, releasable, f" for {max_sequences} x {context_length} positions of {kv_cache}")


__all__ = ["Budget", "available_memory", "cgroup_headroom", "check_load", "check_memory", "check_tensors",
           "estimate", "kv_cache_bytes", "meminfo_available"]
