"""Shared fixtures: tiny configs, reference weights, and the ISA list the tests run over."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import llama32_native as l32  # noqa: E402
from llama32_native.config import LlamaConfig, RopeScaling  # noqa: E402
from llama32_native.loading import Tensor  # noqa: E402

ISAS = l32.system_info()["available_isas"]
# The directory this run imports llama32_native from (the source tree with a dev build, or site-packages after
# `pip install .`): child processes must import the same copy, never the source tree without its compiled core.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(l32.__file__)))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that must import the same llama32_native as this test run."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
    return env


def pytest_report_header(config):
    info = l32.system_info()
    return f"llama32_native: isa={info['isa']} available={info['available_isas']} cpu={info['cpu']}"


def tiny_config(**kw) -> LlamaConfig:
    base = dict(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16, n_ff=96, n_vocab=256, n_ctx=16384,
                rope_theta=500000.0, rope_scaling=RopeScaling(factor=32.0, original_max_position_embeddings=64))
    base.update(kw)
    return LlamaConfig(**base)


def as_tensors(w: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {k: Tensor("f32", tuple(v.shape), np.ascontiguousarray(v, dtype=np.float32)) for k, v in w.items()}


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param
