"""The CI skip policy of tests/conftest.py: with env CI set, a skip outside ALLOWED_SKIPS fails the run.

Each case runs pytest in a subprocess on a throwaway test directory that uses this conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

HERE = Path(__file__).resolve().parent


def run_suite(tmp_path: Path, body: str, ci: bool) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text("import pytest\n\n" + body)
    env = subprocess_env()
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


UNEXPECTED = 'def test_a():\n    pytest.skip("a package went missing")\n'
ALLOWED = 'def test_b():\n    pytest.skip("root reads files whatever their mode")\n'
AT_IMPORT = 'pytest.importorskip("a_module_that_does_not_exist_l32")\n\ndef test_c():\n    pass\n'


@pytest.mark.parametrize(("body", "ci", "rc"), [
    (UNEXPECTED, True, 1),
    (UNEXPECTED, False, 0),
    (ALLOWED, True, 0),
    (AT_IMPORT, True, 1),
])
def test_unexpected_skip_fails_only_under_ci(tmp_path: Path, body: str, ci: bool, rc: int) -> None:
    r = run_suite(tmp_path, body, ci)
    assert r.returncode == rc, r.stdout + r.stderr
    assert "SKIPPED" in r.stdout  # -rs prints the reason
    assert ("unexpected skips" in r.stdout) == (rc == 1)


def test_policy_leaves_failures_failing(tmp_path: Path) -> None:
    r = run_suite(tmp_path, "def test_d():\n    assert False\n", ci=True)
    assert r.returncode == 1 and "1 failed" in r.stdout


def test_ci_script_and_readme_run_the_same_command() -> None:
    root = HERE.parent
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    command = 'pip install ".[test,ray]" "torch==2.13.0" && python -m pytest -q -rs tests'
    assert command in readme and command in ci
    assert 'export CI="${CI:-true}"' in ci
    assert os.access(root / ".ci" / "run", os.X_OK)
