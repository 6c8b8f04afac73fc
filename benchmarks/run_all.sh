#!/usr/bin/env bash
# Every benchmark once, one after the other, each printed table in DIR/<benchmark><flags>.txt.
#
#   bash benchmarks/run_all.sh DIR        # from the repository root, in the project's environment
#
# Run it on a quiet machine: the benchmarks interleave what they compare, but a ratio is only as good
# as the load it ran under. Before each benchmark the script waits 20 s (the 1-minute load average
# then mostly forgets the previous one) and appends the top processes to DIR/_top.txt, so that the
# load figure each table prints can be checked against what else was running. DIR/_summary.txt
# lists the commit, every command, its exit code and its wall time. Two such runs, compared, are in
# benchmarks/RESULTS.md ("Two full runs on a quiet machine"). About 55 minutes on 2 CPU cores.
set -u
if [ $# -ne 1 ]; then echo "usage: bash benchmarks/run_all.sh DIR" >&2; exit 2; fi
out=$1
mkdir -p "$out"
echo "commit $(git rev-parse --short HEAD) start $(date -Is) load $(cut -d' ' -f1-3 /proc/loadavg)" \
  >> "$out/_summary.txt"
run() {
  local name=$1 tag
  shift
  sleep 20
  top -bn1 | sed -n "1p;7,12p" >> "$out/_top.txt"
  local start
  start=$(date +%s)
  echo "== $name $* (start $(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg))" >> "$out/_summary.txt"
  tag=$name$(echo "$@" | tr -d " -")
  python -m "benchmarks.$name" "$@" > "$out/$tag.txt" 2> "$out/$tag.err"
  echo "   rc=$? wall=$(( $(date +%s) - start ))s" >> "$out/_summary.txt"
}
run core_overhead
run table1 --models vit-b32      # the RN50 rows add ~35 min (5 rounds of 130 s training calls)
run models_vs_torch
run clip_vs_torch
run scan_eval
run equilm_speed
run sampling
run large_groups
run data_parallel
run dqn_throughput
run dqn_throughput --cpus 1
echo "end $(date -Is)" >> "$out/_summary.txt"
