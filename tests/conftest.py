"""Shared fixtures: tiny configs, reference weights, and the ISA list the tests run over."""

from __future__ import annotations

import os
import platform
import re
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


# Skips CI accepts: (reason pattern, condition, why). With env CI set, any other skip fails the session, so a
# test that stops running (a package missing from the test extras, a fixture gone) cannot pass CI unnoticed.
ALLOWED_SKIPS: list[tuple[str, bool, str]] = [
    (r"root reads files whatever their mode", True,
     "the unreadable-file test cannot fail as root, and CI containers run as root"),
    (r"no chromium", True,
     "the chat-page test drives Debian's chromium, which .ci/run installs only where apt-get works as root"),
    (r"could not import 'atheris'", platform.machine() != "x86_64",
     "atheris has wheels for x86_64 Linux only (the test extras' marker)"),
]


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def unexpected_skips(reports) -> list[tuple[str, str]]:
    """(test id, reason) of every skip no allowed pattern matches."""
    allowed = [pattern for pattern, applies, _ in ALLOWED_SKIPS if applies]
    out = []
    for r in reports:
        reason = _skip_reason(r)
        if not any(re.search(pattern, reason) for pattern in allowed):
            out.append((r.nodeid, reason))
    return out


def _skipped_reports(config) -> list:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return [r for r in (reporter.stats.get("skipped", []) if reporter else []) if getattr(r, "skipped", False)]


def pytest_sessionfinish(session, exitstatus):
    ok = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)  # a failure keeps its own status
    if os.environ.get("CI") and ok and unexpected_skips(_skipped_reports(session.config)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bad = unexpected_skips(_skipped_reports(config))
    if bad and os.environ.get("CI"):
        terminalreporter.section("unexpected skips (CI fails on a skip not in tests/conftest.py ALLOWED_SKIPS)")
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")


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
