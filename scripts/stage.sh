#!/usr/bin/env bash
# Usage: stage.sh NAME command...   runs one stage of `make test` and records its duration
#        stage.sh --summary         prints every recorded stage's duration
set -u
log=results/stages.log
mkdir -p results
if [ "${1:-}" = "--summary" ]; then
  echo "== stage durations =="
  cat "$log"
  rm -f "$log"
  exit 0
fi
name=$1; shift
echo "== $name =="
start=$(date +%s.%N)
"$@"
code=$?
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
if [ $code -eq 0 ]; then
  printf '%-28s %8s s\n' "$name" "$secs" | tee -a "$log"
else
  printf '%-28s %8s s  FAILED (exit %d)\n' "$name" "$secs" "$code" | tee -a "$log"
  exit $code
fi
