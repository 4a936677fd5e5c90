#!/usr/bin/env bash
# qemu_isa.sh — CPU-feature dispatch under emulated CPUs (docs/ARCHITECTURE.md, "Kernel tables") and the NEON kernels on aarch64.
#
# 1. Runs tests/test_kernels.py and tests/test_forward.py under qemu-x86_64 user mode with
#    -cpu Haswell (AVX2, no AVX-512) and -cpu SandyBridge (AVX, no AVX2/FMA/F16C): no SIGILL, and
#    system_info()['isa'] must be avx2 / scalar there. NumPy's wheels (baseline X86_V2) SIGILL under
#    qemu's Nehalem model, so on Nehalem only the bare C++ module is loaded (no numpy) and its ISA checked.
#    Each pytest run is bounded by QEMU_TIMEOUT seconds (default 1800; TCG is ~50x slower than native).
# 2. Cross-compiles scripts/neon_check.cpp with the NEON + scalar kernels and runs it under
#    qemu-aarch64 -cpu max: every NEON kernel against scalar on random data.
# Usage: scripts/qemu_isa.sh [--no-install] [pytest args...]   Needs root for apt-get (Debian/Ubuntu).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PYBIN="$("$PY" -c 'import sys, os; print(os.path.realpath(sys.executable))')"
if [ "${1:-}" = "--no-install" ]; then shift; else
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user g++-aarch64-linux-gnu >/dev/null
fi
TESTS=("$@"); [ "${#TESTS[@]}" -eq 0 ] && TESTS=(tests/test_kernels.py tests/test_forward.py -q -p no:cacheprovider)
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
# OpenBLAS (under numpy) picks kernels from CPUID family bits and SIGILLs on qemu's SandyBridge: pin it.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Nehalem}"
cd "$ROOT"
status=0

CORE_ONLY='import glob, importlib.util, sys
spec = importlib.util.spec_from_file_location("_core", glob.glob(sys.argv[1] + "/_core*.so")[0])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.system_info()["isa"])'
got="$(qemu-x86_64 -cpu Nehalem "$PYBIN" -c "$CORE_ONLY" "$ROOT/python/llama32_native" 2>&1 | tail -n1)"
echo "qemu -cpu Nehalem (bare _core, no numpy): isa=$got (want scalar)"
[ "$got" = "scalar" ] || status=1

for spec in "Haswell avx2" "SandyBridge scalar"; do
  set -- $spec; cpu=$1; want=$2
  got="$(qemu-x86_64 -cpu "$cpu" "$PYBIN" -c 'import llama32_native as l; print(l.system_info()["isa"])' 2>&1 | tail -n1)"
  echo "qemu -cpu $cpu: isa=$got (want $want)"
  [ "$got" = "$want" ] || status=1
  start=$(date +%s)
  timeout "${QEMU_TIMEOUT:-1800}" qemu-x86_64 -cpu "$cpu" "$PYBIN" -m pytest "${TESTS[@]}" 2>&1 | tail -n 3
  rc=${PIPESTATUS[0]}
  echo "qemu -cpu $cpu: pytest rc=$rc in $(( $(date +%s) - start )) s (rc 132 = SIGILL, 124 = timeout)"
  [ "$rc" -eq 0 ] || status=1
done

mkdir -p "$ROOT/build/qemu"
aarch64-linux-gnu-g++ -O2 -std=c++17 -march=armv8.2-a+dotprod+fp16 -I"$ROOT/csrc" "$ROOT/scripts/neon_check.cpp" \
  "$ROOT/csrc/kernels/neon.cpp" "$ROOT/csrc/kernels/scalar.cpp" "$ROOT/csrc/formats.cpp" \
  -o "$ROOT/build/qemu/neon_check" 2> "$ROOT/build/qemu/neon_check.log" || { cat "$ROOT/build/qemu/neon_check.log"; exit 1; }
qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu "$ROOT/build/qemu/neon_check" | tail -n 25
rc=${PIPESTATUS[0]}
echo "neon_check under qemu-aarch64: rc=$rc"
[ "$rc" -eq 0 ] || status=1
exit $status
