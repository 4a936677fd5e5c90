#!/usr/bin/env bash
# fuzz.sh — run every atheris harness in fuzz/ for SECONDS each (default 60).
#
# Usage: scripts/fuzz.sh [SECONDS] [harness ...]   e.g. scripts/fuzz.sh 180, scripts/fuzz.sh 10 gguf
# New inputs go to build/fuzz/<name>/corpus (the committed seeds in fuzz/corpus/<name> are read only);
# crashes are written as build/fuzz/<name>/crash-*; logs to build/fuzz/<name>.log. Exit 1 on any crash.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-60}"; shift || true
PY="${PYTHON:-python3}"
export PYTHONPATH="${PYTHONPATH:-$ROOT/python}"  # the dev build; set PYTHONPATH to fuzz another copy
NAMES=("$@"); [ "${#NAMES[@]}" -eq 0 ] && NAMES=(safetensors config gguf tokenizer native tokenizer_json)
OUT="$ROOT/build/fuzz"
status=0
for name in "${NAMES[@]}"; do
  dir="$OUT/$name"; mkdir -p "$dir/corpus"
  log="$OUT/$name.log"
  ( cd "$dir" && "$PY" "$ROOT/fuzz/fuzz_$name.py" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$dir/" -print_final_stats=1 "$dir/corpus" "$ROOT/fuzz/corpus/$name" ) > "$log" 2>&1
  rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n1)"
  corpus="$(ls "$dir/corpus" | wc -l)"
  crashes="$(ls "$dir" | grep -c '^crash-\|^timeout-\|^oom-')"
  echo "$name: rc=$rc execs=${execs:-?} ${cov:-cov: ?} new_corpus=$corpus artifacts=$crashes"
  [ "$rc" -ne 0 ] && { status=1; grep -m1 -A25 'Uncaught Python exception\|ERROR:' "$log"; }
done
exit $status
