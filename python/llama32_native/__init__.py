"""llama32_native: Meta Llama 3.2 1B/3B text models on the CPU.

A C++ core with runtime-dispatched SIMD kernels (AVX2, AVX-512 VNNI, NEON) and OpenMP, under a small
Python API: `Model.from_pretrained(path)` or `Model.random("llama-3.2-1b")`, then `generate`, `stream`,
`chat`, `generate_batch`, `logits`, or `session()` for custom loops.
"""

from __future__ import annotations

from . import threads as _threads  # first: sets the OpenMP wait policy before the core loads
from ._version import __version__
from .config import PRESETS, LlamaConfig, RopeScaling
from .errors import *  # noqa: F403  (the whole hierarchy is public)
from .errors import __all__ as _error_names

try:
    from . import _core
except ImportError as e:  # a forced ISA the CPU lacks, or a broken build: say which
    raise ImportError(f"llama32_native: cannot load the C++ core: {e}") from e

from .model import Model, Session
from .sampling import SamplingParams
from .tokenizer import Tokenizer


def system_info() -> dict:
    """The kernel ISA chosen for this CPU, the ISAs it could run, threads and OpenMP."""
    from .model import default_threads

    info = dict(_core.system_info())
    info["threads"] = default_threads()
    info["wait_policy"] = _threads.wait_policy()
    info["version"] = __version__
    return info


__all__ = [
    "__version__",
    "Model",
    "Session",
    "LlamaConfig",
    "RopeScaling",
    "PRESETS",
    "SamplingParams",
    "Tokenizer",
    "system_info",
]
__all__ += _error_names
