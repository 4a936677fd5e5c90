#!/usr/bin/env bash
# asan.sh — build the C++ core with AddressSanitizer + UBSan in build/asan and run pytest against it.
#
# Usage: scripts/asan.sh [pytest args...]   (default: the whole tests/ directory, -x off, -q)
# The ASan module is copied into a temporary copy of the Python package, which is put first on
# PYTHONPATH, so the normal build in build/dev and python/llama32_native stay untouched.
# Leak detection is off (CPython leaks by design); halt_on_error makes any ASan/UBSan report fatal.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${ASAN_BUILD_DIR:-$ROOT/build/asan}"
PY="${PYTHON:-python3}"

PYBIND11_DIR="$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DL32_SANITIZE=ON \
      -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$PYBIND11_DIR" > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)"

SO="$(ls "$BUILD"/_core*.so | head -n1)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cp -rL "$ROOT/python/llama32_native" "$TMP/llama32_native"
rm -f "$TMP"/llama32_native/_core*.so
cp "$SO" "$TMP/llama32_native/"

LIBASAN="$(gcc -print-file-name=libasan.so)"
LIBUBSAN="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$LIBASAN${LIBUBSAN:+:$LIBUBSAN}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1${ASAN_EXTRA:+:$ASAN_EXTRA}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$TMP${PYTHONPATH:+:$PYTHONPATH}"
export L32_UNDER_ASAN=1

cd "$ROOT"
"$PY" - <<'PYEOF'
import llama32_native, llama32_native._core as c
print("using", c.__file__)
assert "/tmp" in c.__file__, "the ASan module is not first on the path"
PYEOF
if [ "$#" -eq 0 ]; then set -- tests -q -p no:cacheprovider; fi
"$PY" -m pytest "$@"
