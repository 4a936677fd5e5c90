#!/usr/bin/env bash
# qemu_isa.sh — CPU-feature dispatch under emulated CPUs (docs/ARCHITECTURE.md, "Kernel tables") and the NEON kernels on aarch64.
#
# 1. Runs tests/test_kernels.py and tests/test_forward.py under qemu-x86_64 user mode with
#    -cpu Haswell (AVX2, no AVX-512) and -cpu SandyBridge (AVX, no AVX2/FMA/F16C): no SIGILL, and
#    system_info()['isa'] must be avx2 / scalar there. NumPy's wheels (baseline X86_V2) SIGILL under
#    qemu's Nehalem model, so on Nehalem only the bare C++ module is loaded (no numpy) and its ISA checked.
#    Each pytest run is bounded by QEMU_TIMEOUT seconds (default 1800; TCG is ~50x slower than native).
# 2. Cross-compiles scripts/neon_check.cpp with the NEON + scalar kernels and dispatch.cpp and runs it under
#    qemu-aarch64 -cpu max: every NEON kernel against scalar on random data (natively on an aarch64 host).
# Usage: scripts/qemu_isa.sh [--no-install] [--neon] [pytest args...]   --neon: part 2 only (CI runs that, ~1 min).
# Needs root for apt-get (Debian/Ubuntu) unless --no-install.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PYBIN="$("$PY" -c 'import sys, os; print(os.path.realpath(sys.executable))')"
if [ "${1:-}" = "--no-install" ]; then shift; else
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user g++-aarch64-linux-gnu >/dev/null
fi
NEON_ONLY=0
if [ "${1:-}" = "--neon" ]; then NEON_ONLY=1; shift; fi
TESTS=("$@"); [ "${#TESTS[@]}" -eq 0 ] && TESTS=(tests/test_kernels.py tests/test_forward.py -q -p no:cacheprovider)
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
# OpenBLAS (under numpy) picks kernels from CPUID family bits and SIGILLs on qemu's SandyBridge: pin it.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Nehalem}"
cd "$ROOT"
status=0

# _core imports llama32_native.errors (CoreError's base class): an empty package module and that one file, so that
# the real package (and numpy) stay out.
CORE_ONLY='import glob, importlib.util, sys, types
sys.modules["llama32_native"] = types.ModuleType("llama32_native")
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod); return mod
load("llama32_native.errors", sys.argv[1] + "/errors.py")
spec = importlib.util.spec_from_file_location("_core", glob.glob(sys.argv[1] + "/_core*.so")[0])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.system_info()["isa"])'
run_x86() {
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
}

# neon.cpp with the NEON flags alone, as CMakeLists.txt builds it; the rest for baseline Armv8-A.
run_neon() {
  local out="$ROOT/build/qemu" cxx=aarch64-linux-gnu-g++ runner=(qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu)
  if [ "$(uname -m)" = aarch64 ]; then cxx=g++; runner=(); fi
  mkdir -p "$out"
  { "$cxx" -O2 -std=c++17 -march=armv8.2-a+dotprod+fp16 -I"$ROOT/csrc" -c "$ROOT/csrc/kernels/neon.cpp" -o "$out/neon.o" \
    && "$cxx" -O2 -std=c++17 -I"$ROOT/csrc" "$ROOT/scripts/neon_check.cpp" "$ROOT/csrc/dispatch.cpp" \
         "$ROOT/csrc/cpu_features.cpp" "$ROOT/csrc/formats.cpp" "$ROOT/csrc/kernels/scalar.cpp" "$out/neon.o" \
         -o "$out/neon_check"; } > "$out/neon_check.log" 2>&1 || { cat "$out/neon_check.log"; echo "neon_check: build failed"; status=1; return; }
  "${runner[@]}" "$out/neon_check" | tail -n 25
  local rc=${PIPESTATUS[0]}
  echo "neon_check${runner[0]:+ under qemu-aarch64}: rc=$rc"
  [ "$rc" -eq 0 ] || status=1
}

[ "$NEON_ONLY" = 1 ] || run_x86
run_neon
exit $status
