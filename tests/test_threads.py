"""Thread defaults and the OpenMP wait policy (llama32_native.threads).

Contract under test: the default thread count follows affinity and the cgroup CPU quota (v2 and v1 files); the
package sets a bounded spin before its core loads unless the user chose a policy, and says when another library's
libgomp came first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import subprocess_env, tiny_config
from llama32_native import threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(("text", "expected"), [("150000 100000\n", 1.5), ("max 100000\n", None),
                                                 ("400000 100000\n", 4.0), ("garbage\n", None)])
def test_cgroup_v2_quota(tmp_path: Path, text: str, expected: float | None) -> None:
    _write(tmp_path / "cpu.max", text)
    assert threads.cgroup_cpu_limit(str(tmp_path)) == expected


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "50000\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(str(tmp_path)) == 0.5
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpu_limit(str(tmp_path)) is None
    assert threads.cgroup_cpu_limit(str(tmp_path / "missing")) is None


def test_default_threads_follows_quota_and_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    unlimited = threads.default_threads()
    assert 1 <= unlimited <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)  # 1.5 CPUs of quota: one thread
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.2)  # never zero
    assert threads.default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.default_threads() == 1


def test_threads_for_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert threads.threads_for_load(2, others=0.0) == 2  # idle
    assert threads.threads_for_load(2, others=0.3) == 2  # a browser tab
    assert threads.threads_for_load(2, others=1.0) == 1  # one CPU-bound process: one thread per free CPU
    assert threads.threads_for_load(2, others=2.0) == 1  # never zero
    monkeypatch.setattr(threads, "other_cpu_load", lambda seconds=0.1: None)  # not Linux: no /proc/stat
    assert threads.threads_for_load(2) == 2


def test_other_cpu_load_sees_a_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        seen = threads.other_cpu_load(1.0)
    finally:
        busy.kill()
        busy.wait()
    assert seen is not None and seen >= 0.5  # the busy loop alone keeps one CPU busy (others may add more)


def test_model_and_system_info_use_the_same_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama32_native as l32
    from llama32_native.model import default_threads

    monkeypatch.setattr(threads, "other_cpu_load", lambda seconds=0.1: 0.0)
    assert default_threads() == threads.default_threads() == l32.system_info()["threads"]
    model = l32.Model.random(tiny_config(), quant="f32", context_length=16, max_sequences=1)
    assert model.threads == threads.default_threads()
    monkeypatch.setattr(threads, "other_cpu_load", lambda seconds=0.1: float(len(os.sched_getaffinity(0))))
    busy_machine = l32.Model.random(tiny_config(), quant="f32", context_length=16, max_sequences=1)
    assert busy_machine.threads == 1 == l32.system_info()["threads"]


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in subprocess_env(**env).items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") or k in env}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


REPORT = ("import os, llama32_native as l32; from llama32_native import threads; "
          "print(os.environ.get('GOMP_SPINCOUNT'), '|', threads.wait_policy())")


def test_bounded_spin_is_set_before_the_core_loads() -> None:
    spin, policy = _child(REPORT).split(" | ")
    assert spin == str(threads.SPIN_COUNT) and int(spin) < 300000  # below libgomp's default
    assert policy.startswith("bounded spin")


def test_user_policy_wins() -> None:
    spin, policy = _child(REPORT, OMP_WAIT_POLICY="passive").split(" | ")
    assert spin == "None" and "OMP_WAIT_POLICY=passive" in policy
    spin, policy = _child(REPORT, GOMP_SPINCOUNT="123").split(" | ")
    assert spin == "123" and "GOMP_SPINCOUNT=123" in policy


def test_libgomp_loaded_first_is_reported() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("libgomp is the Linux OpenMP runtime")
    code = ("import ctypes; ctypes.CDLL('libgomp.so.1'); " + REPORT)
    spin, policy = _child(code).split(" | ")
    assert spin == "None" and "loaded before" in policy
